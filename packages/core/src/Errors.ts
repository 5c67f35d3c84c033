/**
 * Every typed error of `@cqbus/core` lives here, so callers find the whole failure vocabulary of the bus in one place
 * and `Effect.catchTag` covers it. Backends convert their own errors into these once, at their boundary.
 *
 * The classes extend `TaggedErrorBase` (a `Data.Error` whose `name` is its `_tag`, so an error prints as
 * `PublishError: …`) with an explicit `_tag` field rather than `Data.TaggedError("X")` because JSR rejects
 * class-expression superclasses in a published API (DESIGN §6).
 *
 * @module
 */
import { type Cause, Data, Duration, type Types } from "effect"

/**
 * The base of every cqbus error class: `Data.Error` (yieldable, structural equality) whose `name` is its `_tag`, so
 * `String(error)`, stack traces and Effect's `Cause.pretty` show `PublishError: cannot publish …` instead of
 * `Error: cannot publish …`. Subclasses declare `readonly _tag = "X"`; sibling packages (`@cqbus/nats`) extend it too,
 * so every error of the family prints the same way. Typed like `Data.Error` (a constructor value, not a class
 * declaration) so subclasses keep their fields' types.
 *
 * @since 0.1.0
 * @category errors
 */
export const TaggedErrorBase: new<A extends Record<string, any> = {}>(
  args: Types.VoidIfEmpty<{ readonly [P in keyof A]: A[P] }>
) => Cause.YieldableError & Readonly<A> = (() => {
  class Base extends Data.Error<{}> {}
  // `name` is an accessor on the prototype rather than a field: subclass fields (`_tag`) are set after the base
  // constructor ran, and an own `name` field would shadow it. V8 formats `stack` lazily, so its first line reads the tag.
  Object.defineProperty(Base.prototype, "name", {
    get(this: { readonly _tag?: string }) {
      return this._tag ?? "Error"
    },
    configurable: true,
    enumerable: false
  })
  return Base as never
})()

/**
 * What is wrong with a topic, as found by `validateTopic`.
 *
 * @since 0.1.0
 * @category errors
 */
export type InvalidTopicProblem =
  | "Empty"
  | "TooLong"
  | "NonAscii"
  | "Whitespace"
  | "ControlCharacter"
  | "EmptyToken"
  | "Wildcard"
  | "MisplacedWildcard"

/**
 * A topic (NATS subject) that cannot be used where it was given. `position` is the 0-based index of the offending
 * character or of the start of the offending token, when there is one.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidTopic extends TaggedErrorBase<{
  readonly topic: string
  readonly problem: InvalidTopicProblem
  readonly position: number | undefined
  readonly message: string
}> {
  readonly _tag = "InvalidTopic"
}

/**
 * Why a publish failed. `retriable` says whether sending the same message again may succeed. `Unavailable`: the
 * stream exists but cannot store right now (a clustered stream between leaders, or without a quorum); it is
 * retriable, and the backend has already tried again within the publish timeout.
 *
 * @since 0.1.0
 * @category errors
 */
export type PublishErrorReason =
  | "Closed"
  | "Encode"
  | "MissingKey"
  | "NoStream"
  | "TooLarge"
  | "StreamFull"
  | "WrongLastSequence"
  | "PermissionDenied"
  | "Timeout"
  | "NotConnected"
  | "InvalidOptions"
  | "Unavailable"
  | "Unknown"

/**
 * A message could not be published (`MissingKey`: the event's ordering key is empty, see `defineEvent`'s
 * `allowEmptyKey`; `InvalidOptions`: a publish option is out of range, named in the message). Nothing was stored
 * unless `reason` is `Timeout`, or `NotConnected` because the connection was lost while the acknowledgement was on its
 * way: then the outcome is unknown (publishing again with the same event id is safe: the backend drops the duplicate).
 *
 * @since 0.1.0
 * @category errors
 */
export class PublishError extends TaggedErrorBase<{
  readonly topic: string
  readonly reason: PublishErrorReason
  readonly retriable: boolean
  readonly message: string
  readonly cause?: unknown
}> {
  readonly _tag = "PublishError"
}

/**
 * Why a subscription could not be created (`PermissionDenied`: the backend refused this identity the right to consume
 * the topic, e.g. a NATS user without the subscribe or JetStream API permissions it needs).
 *
 * @since 0.1.0
 * @category errors
 */
export type SubscribeErrorReason =
  | "Closed"
  | "InvalidOptions"
  | "GroupConflict"
  | "Unsupported"
  | "PermissionDenied"
  | "Transport"

/**
 * A subscription could not be created; nothing was consumed.
 *
 * @since 0.1.0
 * @category errors
 */
export class SubscribeError extends TaggedErrorBase<{
  readonly topic: string
  readonly group: string | undefined
  readonly reason: SubscribeErrorReason
  readonly message: string
  readonly cause?: unknown
}> {
  readonly _tag = "SubscribeError"
}

/**
 * Why a topic's configuration was refused: `Unsupported`, the backend cannot do it (it has no per-topic persistence,
 * or, on NATS, JetStream is not enabled for a persistent topic); `NoStream`, a persistent topic that no stream captures
 * and the bus may not add (its stream is another service's, or provisioning forbids changes); `Captured`, an
 * ephemeral topic that a stream captures (it would be stored all the same); `InvalidOptions`, the settings are out of
 * range; `Transport`, the broker could not be asked or changed.
 *
 * @since 0.1.0
 * @category errors
 */
export type TopicConfigErrorReason = "Unsupported" | "NoStream" | "Captured" | "InvalidOptions" | "Transport"

/**
 * A topic's configuration was refused; the topic keeps the configuration it had.
 *
 * @since 0.1.0
 * @category errors
 */
export class TopicConfigError extends TaggedErrorBase<{
  readonly topic: string
  readonly reason: TopicConfigErrorReason
  readonly message: string
  readonly cause?: unknown
}> {
  readonly _tag = "TopicConfigError"
}

/**
 * A message body is not a valid protobuf encoding of the expected type. The message is dead-lettered at once: a
 * redelivery would fail the same way.
 *
 * @since 0.1.0
 * @category errors
 */
export class DecodeError extends TaggedErrorBase<{
  readonly topic: string
  readonly typeName: string
  readonly message: string
  readonly cause?: unknown
}> {
  readonly _tag = "DecodeError"
}

/**
 * A health check failed. `component` names the part that failed (`"transport"`, `"connection"`, `"stream"`, ...).
 *
 * @since 0.1.0
 * @category errors
 */
export class HealthError extends TaggedErrorBase<{
  readonly component: string
  readonly message: string
  readonly cause?: unknown
}> {
  readonly _tag = "HealthError"
}

/**
 * Handler outcome: dead-letter this message now, without retrying. Use it for events that can never be processed
 * (a business rule says no, a referenced entity will never exist).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Reject } from "@cqbus/core"
 * const handler = (event: { price: string }) =>
 *   Number(event.price) < 0 ? Effect.fail(new Reject({ reason: "negative price" })) : Effect.void
 * ```
 *
 * @since 0.1.0
 * @category outcomes
 */
export class Reject extends TaggedErrorBase<{ readonly reason: string }> {
  readonly _tag = "Reject"
  override get message(): string {
    return `rejected: ${this.reason}`
  }
}

/**
 * Handler outcome: redeliver this message after `delay` (instead of the subscription's backoff). It counts as a
 * delivery attempt, so `maxDeliver` still bounds it.
 *
 * @since 0.1.0
 * @category outcomes
 */
export class RetryLater extends TaggedErrorBase<{ readonly delay: Duration.Input; readonly reason?: string }> {
  readonly _tag = "RetryLater"
  override get message(): string {
    return `retry later (${Duration.format(Duration.fromInputUnsafe(this.delay))})${this.reason ? `: ${this.reason}` : ""}`
  }
}

/**
 * A handler ran longer than the `timeout` middleware allowed; it was interrupted and the message is retried.
 *
 * @since 0.1.0
 * @category errors
 */
export class HandlerTimeout extends TaggedErrorBase<{ readonly timeout: Duration.Input; readonly topic: string }> {
  readonly _tag = "HandlerTimeout"
  override get message(): string {
    return `handler for ${this.topic} timed out after ${Duration.format(Duration.fromInputUnsafe(this.timeout))}`
  }
}

/**
 * An option is out of its accepted range where no more specific error applies: a bus layer's configuration
 * (`EventBus.layer`, `MemoryTransport.layer`) or a plugin constructor (`retry`, `logging`, ...; those throw it, since
 * they are plain functions). `option` is the option's path (`subscribe.concurrency`); `message` names the option, the
 * value (never a credential) and the accepted range.
 *
 * @since 0.1.0
 * @category errors
 */
export class ConfigError extends TaggedErrorBase<{ readonly option: string; readonly message: string }> {
  readonly _tag = "ConfigError"
}

/**
 * The tag of any failure: its `_tag`, else the `Error`'s name, else its `typeof`. Dead-letter records, logs and
 * metrics name errors with it.
 *
 * @since 0.1.0
 * @category errors
 */
export const errorTag = (error: unknown): string =>
  typeof error === "object" && error !== null && "_tag" in error && typeof error._tag === "string"
    ? error._tag
    : error instanceof Error
    ? error.name
    : typeof error

/**
 * A readable message for any failure: its `message` when it has one, else the string itself or its JSON.
 *
 * @since 0.1.0
 * @category errors
 */
export const errorMessage = (error: unknown): string => {
  if (typeof error === "string") return error
  if (typeof error === "object" && error !== null && "message" in error && typeof error.message === "string") {
    return error.message
  }
  try {
    return JSON.stringify(error) ?? String(error)
  } catch {
    return String(error)
  }
}

/**
 * Why a dead-letter operation failed: `Unsupported`, the backend has no dead-letter store (or, on NATS, JetStream is
 * not enabled); `NotFound`, no record has the id; `InvalidQuery`, a filter, limit, id or cursor is malformed;
 * `Transport`, the broker could not be asked.
 *
 * @since 0.1.0
 * @category errors
 */
export type DeadLetterErrorReason = "Unsupported" | "NotFound" | "InvalidQuery" | "Transport"

/**
 * A dead-letter operation (`DeadLetters`: list, get, replay, purge) failed; nothing was changed unless `reason` is
 * `Transport` in the middle of a purge or replay (then what was done before is done).
 *
 * @since 0.1.0
 * @category errors
 */
export class DeadLetterError extends TaggedErrorBase<{
  readonly reason: DeadLetterErrorReason
  readonly message: string
  readonly cause?: unknown
}> {
  readonly _tag = "DeadLetterError"
}
