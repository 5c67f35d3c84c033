/**
 * Handlers and middleware. A handler is an Effect-returning function of the event and its `Delivery`; its result
 * decides delivery (success acks, failure redelivers, `Reject` dead-letters), so handler code never acks. A
 * middleware is a function from handler to handler whose type shows what it adds; plugins are middleware.
 *
 * @module
 */
import { Duration, Effect } from "effect"
import { HandlerTimeout } from "./Errors.ts"
import * as Options from "./Options.ts"
import type { PublishError } from "./Errors.ts"
import type { Headers, OutgoingMessage, PublishAck } from "./Transport.ts"

/**
 * Everything known about one delivery of an event besides the event itself.
 *
 * @since 0.1.0
 * @category models
 */
export interface Delivery {
  /** The topic the event was published on (the concrete topic, also under a wildcard subscription). */
  readonly topic: string
  /** The subject on the wire: equal to `topic` unless the backend puts the ordering key in the subject. */
  readonly subject: string
  /** The event id (`ce-id`); for a message published without one, an id derived from its stream position. */
  readonly eventId: string
  /** 1 for the first delivery, counting redeliveries and in-place retries. */
  readonly attempt: number
  /**
   * The subscription's `maxDeliver`: a failure when `attempt >= maxDeliver` dead-letters the message instead of
   * redelivering it (so middleware such as metrics can tell the two apart).
   */
  readonly maxDeliver: number
  /** Every header (names lower-case, except NATS's own `Nats-*`). */
  readonly headers: Headers
  /**
   * One header by its lower-case name. Prefer it to `headers[name]` in middleware that reads one or two: a backend that
   * parses wire headers lazily then never builds the whole record.
   */
  readonly header: (name: string) => string | undefined
  /** When the event was published (`ce-time`, else the stream's timestamp), when known. */
  readonly publishedAt: Date | undefined
  /** The stream sequence, when the backend has one. */
  readonly sequence: number | undefined
  /** The ordering key, when the event has one. */
  readonly key: string | undefined
  /** The subscription's group, `undefined` for an ephemeral subscription. */
  readonly group: string | undefined
  /**
   * `false` when the backend cannot deliver the event again (an ephemeral topic's, at most once): a failure then
   * dead-letters it at once, whatever `attempt` and `maxDeliver` say. Absent means `true`.
   */
  readonly redeliverable?: boolean
}

/**
 * Handles one event. Fail with `Reject` to dead-letter now, with `RetryLater` to redeliver after a delay, with any
 * other error to redeliver with the subscription's backoff.
 *
 * @since 0.1.0
 * @category models
 */
export interface Handler<in A, out E = never, out R = never> {
  (event: A, delivery: Delivery): Effect.Effect<void, E, R>
}

/**
 * A function from handler to handler. `EAdd`/`RAdd` are the errors and requirements it adds.
 *
 * @since 0.1.0
 * @category models
 */
export interface Middleware<EAdd = never, RAdd = never> {
  <A, E, R>(handler: Handler<A, E, R>): Handler<A, E | EAdd, R | RAdd>
}

/**
 * Sends one message to the transport (the last step of a publish).
 *
 * @since 0.1.0
 * @category models
 */
export type Send = (message: OutgoingMessage) => Effect.Effect<PublishAck, PublishError>

/**
 * The publish-side counterpart of `Middleware`: a function from send to send. It sees the encoded message with its
 * headers (to add `traceparent`, time the publish, log it) and the acknowledgement or the error.
 *
 * @since 0.1.0
 * @category models
 */
export type PublishMiddleware = (next: Send) => Send

/**
 * Fails a handler run with `HandlerTimeout` (and interrupts it) when it takes longer than `duration`; the message is
 * then redelivered like any failure. CQC's `WithTimeout`. A `duration` outside 1 ms to 1 hour throws a `ConfigError`.
 *
 * @since 0.1.0
 * @category middleware
 */
export const timeout = (duration: Duration.Input): Middleware<HandlerTimeout> => {
  Options.orThrow(Options.duration("timeout", duration, Options.Ranges.timeout))
  const limit = Duration.fromInputUnsafe(duration)
  return (handler) => (event, delivery) =>
    handler(event, delivery).pipe(
      Effect.timeoutOrElse({
        duration: limit,
        orElse: () => Effect.fail(new HandlerTimeout({ timeout: limit, topic: delivery.topic }))
      })
    )
}

/**
 * Runs `f` whenever the handler fails (the failure itself still decides delivery: it is passed on unchanged). Use it
 * to report or count failures. CQC's `WithErrorHandler`.
 *
 * @since 0.1.0
 * @category middleware
 */
export const onError = <R2 = never>(
  f: (error: unknown, event: unknown, delivery: Delivery) => Effect.Effect<void, never, R2>
): Middleware<never, R2> =>
(handler) =>
(event, delivery) => handler(event, delivery).pipe(Effect.tapError((error) => f(error, event, delivery)))
