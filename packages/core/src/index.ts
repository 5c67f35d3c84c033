/**
 * `@cqbus/core`: a typed, Effect-native event bus. Events are protobuf messages, topics follow the CQC convention
 * (`cqc.events.v1.asset_created`), handlers are Effects whose result decides delivery, and the same `EventBus` runs
 * over the in-memory transport (the embedded default) or any backend that implements the `Transport` port. What only
 * backends and plugins need is in `@cqbus/core/backend`.
 *
 * @module
 */
export * as Backlog from "./Backlog.ts"
export type { BacklogChange, BacklogLevel, BacklogShape, BacklogState } from "./Backlog.ts"
export * as Backoff from "./Backoff.ts"
export * as DeadLetters from "./DeadLetters.ts"
export type {
  DeadLetterRecord,
  DeadLettersOptions,
  DeadLettersShape,
  DecodedBody,
  ListOptions as DeadLetterListOptions,
  ReplayOptions as DeadLetterReplayOptions,
  ReplayResult as DeadLetterReplayResult
} from "./DeadLetters.ts"
export { HeaderNames, newEventId, PROTOBUF_CONTENT_TYPE } from "./Envelope.ts"
export {
  ConfigError,
  DeadLetterError,
  type DeadLetterErrorReason,
  DecodeError,
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
  TopicConfigError,
  type TopicConfigErrorReason
} from "./Errors.ts"
export * as EventBus from "./EventBus.ts"
export type { EventBusConfig, EventBusShape, PublishOptions, SubscribeOptions, Subscription } from "./EventBus.ts"
export { defineEvent, type DefineEventOptions, type EventDef, type StringFieldOf } from "./EventDef.ts"
export * as Fetch from "./Fetch.ts"
export type { BatchHandler, Fetched, FetchOptions, FetchResult } from "./Fetch.ts"
export {
  type Delivery,
  type Handler,
  type Middleware,
  onError,
  type PublishMiddleware,
  type Send,
  timeout
} from "./Handler.ts"
export * as MemoryTransport from "./MemoryTransport.ts"
export type { MemoryTransportOptions, StoredMessage } from "./MemoryTransport.ts"
export { runMain, type RunMainOptions } from "./RunMain.ts"
export {
  DEFAULT_TOPIC_PREFIX,
  isValidTopic,
  MAX_TOPIC_LENGTH,
  parseEventType,
  topicName,
  topicOf,
  type TopicKind,
  validateTopic
} from "./Topic.ts"
export * as TopicConfig from "./TopicConfig.ts"
export type { Persistence, TopicEntry, TopicRegistry, TopicSettings } from "./TopicConfig.ts"
export * as Transport from "./Transport.ts"
export type {
  ConnectionEvent,
  ConnectionState,
  ConsumerLag,
  DeadLetter,
  DeadLetterEntry,
  DeadLetterFilter,
  DeadLetterPage,
  DeadLetterQuery,
  DeadLetterStore,
  DeliverPolicy,
  Headers,
  Outcome,
  PublishAck,
  PublishDepth
} from "./Transport.ts"
export * as Verdict from "./Verdict.ts"
