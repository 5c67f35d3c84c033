/**
 * The one rule that turns the end of a handler run into what happens to its message: acked, redelivered or
 * dead-lettered. The bus builds the transport's `Outcome` from it, the bus's default failure line reports it, and the
 * logging and metrics plugins read it, so a log line, a metric and the transport can never disagree about a delivery.
 *
 * @module
 */
import { Cause, Duration, Exit, Result } from "effect"
import { errorMessage, errorTag } from "./Errors.ts"
import type { Delivery } from "./Handler.ts"

/**
 * How the handler run ended: it succeeded, failed with a typed error, died (a thrown exception, `Effect.die`) or was
 * interrupted from inside (`Effect.interrupt`, an interrupted child).
 *
 * @since 0.1.0
 * @category models
 */
export type Ending = "success" | "failure" | "defect" | "interrupt"

/**
 * What one handler run means for its message.
 *
 * - `ack`: the handler succeeded; the message is acknowledged.
 * - `retry`: it failed, died or was interrupted before the last allowed attempt (`attempt < maxDeliver`); the message
 *   is redelivered after `delay` (a `RetryLater`'s own delay) or else after the subscription's backoff.
 * - `dead_letter`: it failed with `Reject`, or failed in any way on the last allowed attempt; the message is moved to
 *   the dead letters with `reason`.
 *
 * `errorTag` is the error's `_tag` (via `errorTag`: `"Reject"`, `"RetryLater"`, `"HandlerDefect"`, ...), `"Defect"` for
 * a defect and `"Interrupted"` for an interruption; `error` is the failure or the defect itself.
 *
 * @since 0.1.0
 * @category models
 */
export type Verdict =
  | { readonly kind: "ack"; readonly ending: "success" }
  | {
    readonly kind: "retry"
    readonly ending: Exclude<Ending, "success">
    readonly errorTag: string
    readonly error: unknown
    /** `"<errorTag>: <message>"` (`"<errorTag>"` when the message is empty). */
    readonly reason: string
    /** The delay a `RetryLater` asked for; `undefined`: the subscription's backoff. */
    readonly delay: Duration.Duration | undefined
  }
  | {
    readonly kind: "dead_letter"
    readonly ending: Exclude<Ending, "success">
    readonly errorTag: string
    readonly error: unknown
    /**
     * Why it was dead-lettered: the `Reject`'s message, or
     * `"gave up after N deliveries; last error <tag>: <message>"`.
     */
    readonly reason: string
  }

/** One shared value: a successful delivery allocates nothing here. */
const ACK: Verdict = { kind: "ack", ending: "success" }

/**
 * The verdict on a handler run at delivery `attempt` (1-based) of at most `maxDeliver`. The primitive behind `of`,
 * for callers that have the numbers rather than a `Delivery`. `redeliverable: false` (a message the backend cannot
 * deliver again: an ephemeral topic's) makes every failure a dead letter, with a reason that says so.
 *
 * @since 0.1.0
 * @category constructors
 */
export const classify = (
  exit: Exit.Exit<unknown, unknown>,
  attempt: number,
  maxDeliver: number,
  redeliverable = true
): Verdict => {
  if (Exit.isSuccess(exit)) return ACK
  const cause = exit.cause
  const failure = Cause.findError(cause)
  let ending: Exclude<Ending, "success">
  let error: unknown
  let tag: string
  let delay: Duration.Duration | undefined
  if (Result.isSuccess(failure)) {
    ending = "failure"
    error = failure.success
    tag = errorTag(error)
    if (tag === "Reject") return { kind: "dead_letter", ending, errorTag: tag, error, reason: errorMessage(error) }
    if (tag === "RetryLater") delay = Duration.fromInputUnsafe((error as { readonly delay: Duration.Input }).delay)
  } else {
    // A drain interrupts the fiber running the whole delivery and the transport hands the message back without asking
    // for a verdict; an interruption that ends the handler's own run came from inside it and is retried like a
    // failure, so it cannot loop without backoff or escape `maxDeliver`.
    const defect = Cause.findDefect(cause)
    ending = Result.isSuccess(defect) ? "defect" : "interrupt"
    error = Result.isSuccess(defect) ? defect.success : new Error("the handler was interrupted")
    tag = Result.isSuccess(defect) ? "Defect" : "Interrupted"
  }
  const message = errorMessage(error)
  const reason = message === "" ? tag : `${tag}: ${message}`
  if (!redeliverable) {
    return { kind: "dead_letter", ending, errorTag: tag, error, reason: `not redelivered (ephemeral topic); error ${reason}` }
  }
  return attempt >= maxDeliver
    ? { kind: "dead_letter", ending, errorTag: tag, error, reason: `gave up after ${attempt} deliveries; last error ${reason}` }
    : { kind: "retry", ending, errorTag: tag, error, reason, delay }
}

/**
 * The verdict on a handler run for `delivery` (its `attempt` and `maxDeliver` decide between retry and dead letter).
 * Middleware calls it on the exit it observes to learn what the bus will do with the message.
 *
 * A drain interrupts a running handler and hands its message back whatever this says; middleware sees that as an
 * ending `"interrupt"`.
 *
 * @example
 * ```ts
 * import { type Middleware, Verdict } from "@cqbus/core"
 * import { Effect } from "effect"
 * const deadLetters: Middleware = (handler) => (event, delivery) =>
 *   handler(event, delivery).pipe(
 *     Effect.onExit((exit) => {
 *       const verdict = Verdict.of(exit, delivery)
 *       return verdict.kind === "dead_letter" ? Effect.logError(`dead letter: ${verdict.reason}`) : Effect.void
 *     })
 *   )
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const of = (
  exit: Exit.Exit<unknown, unknown>,
  delivery: Pick<Delivery, "attempt" | "maxDeliver" | "redeliverable">
): Verdict => classify(exit, delivery.attempt, delivery.maxDeliver, delivery.redeliverable !== false)

/** The property a reporting plugin sets on a delivery; `Symbol.for`, so two copies of this package agree on it. */
const REPORTED: unique symbol = Symbol.for("@cqbus/core/Verdict/reported") as never

/**
 * Tells the bus that a plugin logs the outcome of this delivery (the `logging` plugin calls it when it starts on a
 * delivery), so the bus leaves out its default warning line for a failure or dead letter of this handler run. It
 * marks the `Delivery` object the bus created, so it works in any middleware order as long as middleware passes that
 * object on (not a copy).
 *
 * @since 0.1.0
 * @category reporting
 */
export const markReported = (delivery: Delivery): void => {
  const marked = delivery as { [REPORTED]?: boolean }
  marked[REPORTED] = true
}

/**
 * Whether `markReported` was called for this delivery.
 *
 * @since 0.1.0
 * @category reporting
 */
export const isReported = (delivery: Delivery): boolean => (delivery as { [REPORTED]?: boolean })[REPORTED] === true
