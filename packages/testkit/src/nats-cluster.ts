/**
 * `@cqbus/testkit/nats-cluster`: a JetStream cluster of real `nats-server` processes for failover tests
 * (`NatsCluster.start()`, `NatsCluster.make()`, `NatsCluster.layer()`), kept off the main entry like
 * `@cqbus/testkit/nats-server`.
 *
 * @module
 */
export { NatsClusterError, type NatsClusterErrorReason, NatsServerError } from "./Errors.ts"
export * as NatsCluster from "./NatsCluster.ts"
export type { NatsClusterNode, NatsClusterOptions, NatsClusterShape } from "./NatsCluster.ts"
