/**
 * `@cqbus/nats`: the NATS JetStream backend of cqbus. `NatsEventBus.layer(config)` gives a typed `EventBus` over
 * JetStream with durable pull consumers, stream provisioning, a dead-letter stream and the CloudEvents wire contract
 * shared with CQC's Go services.
 *
 * @module
 */
export * as NatsConnection from "./NatsConnection.ts"
export * as NatsEventBus from "./NatsEventBus.ts"
export * as NatsRequestReply from "./NatsRequestReply.ts"
export * as NatsTransport from "./NatsTransport.ts"

export { DeadLetterHeaders } from "./DeadLetterHeaders.ts"
export type { NatsEventBusConfig, NatsStreamConfig, NatsStreamOptions, ProvisioningStrategy } from "./NatsConfig.ts"
export type { ConnectionEvent, ConnectionState, ManagedConnection } from "./NatsConnection.ts"
export { NatsError, type NatsErrorReason } from "./NatsError.ts"
export type { NatsTransportShape } from "./NatsTransport.ts"
