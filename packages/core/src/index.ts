/**
 * `@cqbus/core`: a typed, Effect-native event bus. Events are protobuf messages, topics follow the CQC convention
 * (`cqc.events.v1.asset_created`), handlers are Effects whose result decides delivery, and the same `EventBus` runs
 * over the in-memory transport (the embedded default) or any backend that implements the `Transport` port.
 *
 * @module
 */
export * as Backoff from "./Backoff.ts"
export {
  envelopeHeaders,
  type EnvelopeAttributes,
  HeaderNames,
  newEventId,
  PROTOBUF_CONTENT_TYPE
} from "./Envelope.ts"
export {
  ConfigError,
  DecodeError,
  errorMessage,
  errorTag,
  HandlerTimeout,
  HealthError,
  InvalidTopic,
  type InvalidTopicProblem,
  PublishError,
  type PublishErrorReason,
  Reject,
  RetryLater,
  SubscribeError,
  type SubscribeErrorReason,
  TaggedErrorBase
} from "./Errors.ts"
export {
  EventBus,
  type EventBusConfig,
  type EventBusShape,
  make as makeEventBus,
  type PublishOptions,
  type SubscribeOptions,
  type Subscription
} from "./EventBus.ts"
export { checkEventBusConfig } from "./internal/checks.ts"
export { defineEvent, type DefineEventOptions, type EventDef, type StringFieldOf } from "./EventDef.ts"
export {
  type Delivery,
  type Handler,
  type Middleware,
  onError,
  type PublishMiddleware,
  type Send,
  timeout
} from "./Handler.ts"
export {
  type GroupInfo,
  make as makeMemoryTransport,
  MemoryTransport,
  type MemoryTransportOptions,
  type MemoryTransportShape,
  type StoredMessage
} from "./MemoryTransport.ts"
export * as Options from "./Options.ts"
export { printable } from "./internal/printable.ts"
export { makeRedactor, redactDeep, redactSecrets } from "./Redact.ts"
export { runMain, type RunMainOptions } from "./RunMain.ts"
export {
  checkTopic,
  compilePattern,
  DEFAULT_TOPIC_PREFIX,
  isValidTopic,
  MAX_TOPIC_LENGTH,
  matchesPattern,
  parseEventType,
  snakeCase,
  topicName,
  topicOf,
  type TopicKind,
  validateTopic
} from "./Topic.ts"
export {
  type ConnectionState,
  type ConnectionWatch,
  type ConsumeOptions,
  type ConsumerLag,
  type DeadLetter,
  type DeliverPolicy,
  type Headers,
  type IncomingMessage,
  type OutgoingMessage,
  type Outcome,
  type PublishAck,
  readHeader,
  Transport,
  type TransportShape
} from "./Transport.ts"
export * as Verdict from "./Verdict.ts"
