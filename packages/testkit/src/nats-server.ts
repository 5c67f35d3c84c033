/**
 * `@cqbus/testkit/nats-server`: real `nats-server` processes for tests (`NatsServer.start()`, `NatsServer.make()`,
 * `NatsServer.layer()`), kept off the main entry because it needs Node's process and file APIs (Node, Bun, Deno).
 *
 * @module
 */
export { NatsServerError, type NatsServerErrorReason } from "./Errors.ts"
export * as NatsServer from "./NatsServer.ts"
export type { NatsServerOptions, NatsServerShape } from "./NatsServer.ts"
