/**
 * Turns a handler into the `process` function a transport runs for each delivery: build the `Delivery`, decode, run
 * the handler, and map its exit to an `Outcome`. This is the one place where "the handler's result decides delivery"
 * (DESIGN §1.2) is implemented, so every backend behaves the same.
 */
import { Cause, Duration, Effect, Exit, Result } from "effect"
import type { Backoff } from "../Backoff.ts"
import { HeaderNames } from "../Envelope.ts"
import { DecodeError, errorMessage as describe, errorTag as tagOf } from "../Errors.ts"
import type { Delivery, Handler } from "../Handler.ts"
import { type Headers, type IncomingMessage, type Outcome, readHeader } from "../Transport.ts"
import { makeKeyedLanes } from "./lanes.ts"

/** What a subscription needs to process deliveries. */
export interface ProcessConfig<A, E> {
  readonly topic: string
  readonly group: string | undefined
  /** Decodes a body; returns a `DecodeError` instead of throwing. */
  readonly decode: (message: IncomingMessage, topic: string) => A | DecodeError
  /** The ordering key from the decoded event, when the event definition has one. */
  readonly keyOf: ((event: A) => string) | undefined
  readonly handler: Handler<A, E>
  readonly maxDeliver: number
  readonly backoff: Backoff
  readonly ordering: "none" | "key"
  readonly concurrency: number
}

const ACK: Outcome = { _tag: "Ack" }
const acked = (): Outcome => ACK

/**
 * The outcome of one handler run. A failure on the last allowed attempt dead-letters with the last error as the reason,
 * so exhausting `maxDeliver` never drops a message.
 */
export const decide = (exit: Exit.Exit<void, unknown>, attempt: number, maxDeliver: number, backoff: Backoff): Outcome => {
  if (Exit.isSuccess(exit)) return ACK
  const cause = exit.cause
  const failure = Cause.findError(cause)
  let error: unknown
  let tag: string
  let delay: Duration.Duration | undefined
  if (Result.isSuccess(failure)) {
    error = failure.success
    tag = tagOf(error)
    if (tag === "Reject") return { _tag: "DeadLetter", reason: describe(error), errorTag: "Reject", attempts: attempt }
    if (tag === "RetryLater") delay = Duration.fromInputUnsafe((error as { readonly delay: Duration.Input }).delay)
  } else {
    // A drain interrupts the fiber running `process`, and the transport hands the message back; an interruption seen
    // here came from inside the handler (`Effect.interrupt`, an interrupted child) and is retried like a failure, so it
    // cannot loop without backoff or escape `maxDeliver`.
    const defect = Cause.findDefect(cause)
    error = Result.isSuccess(defect) ? defect.success : new Error("the handler was interrupted")
    tag = Result.isSuccess(defect) ? "Defect" : "Interrupted"
  }
  const reason = `${tag}: ${describe(error)}`
  if (attempt >= maxDeliver) {
    return {
      _tag: "DeadLetter",
      reason: `gave up after ${attempt} deliveries; last error ${reason}`,
      errorTag: tag,
      attempts: attempt
    }
  }
  return { _tag: "Nak", delay: delay ?? backoff(attempt), error: reason }
}

/** A `Delivery` whose subject, headers, event id and publish time are read from the message only when asked for. */
class LazyDelivery implements Delivery {
  readonly sequence: number | undefined
  #message: IncomingMessage
  #eventId: string | undefined
  #publishedAt: Date | undefined | null = null
  constructor(
    message: IncomingMessage,
    readonly group: string | undefined,
    readonly key: string | undefined,
    readonly attempt: number,
    readonly maxDeliver: number
  ) {
    this.#message = message
    this.sequence = message.sequence
  }
  get topic(): string {
    return this.#message.subject
  }
  get subject(): string {
    return this.#message.subject
  }
  get eventId(): string {
    if (this.#eventId === undefined) {
      const message = this.#message
      this.#eventId = readHeader(message, HeaderNames.id) ??
        (message.sequence === undefined ? "" : `seq:${message.sequence}`)
    }
    return this.#eventId
  }
  get headers(): Headers {
    return this.#message.headers
  }
  header(name: string): string | undefined {
    return readHeader(this.#message, name)
  }
  get publishedAt(): Date | undefined {
    if (this.#publishedAt === null) {
      const time = readHeader(this.#message, HeaderNames.time)
      const stamped = time === undefined ? undefined : new Date(time)
      this.#publishedAt = stamped === undefined || Number.isNaN(stamped.getTime()) ? this.#message.publishedAt : stamped
    }
    return this.#publishedAt
  }
}

/** Builds the `process` function of a subscription. */
export const makeProcess = <A, E>(config: ProcessConfig<A, E>): (message: IncomingMessage) => Effect.Effect<Outcome> => {
  const { backoff, group, handler, keyOf, maxDeliver } = config
  const makeDelivery = (message: IncomingMessage, key: string | undefined, attempt: number): Delivery =>
    new LazyDelivery(message, group, key, attempt, maxDeliver)
  // The key function is user code run outside any Effect: one that throws is a defect of this delivery (redelivered
  // with backoff, dead-lettered at maxDeliver), not an exception in the transport's callback.
  const keyOrFailure = (event: A, message: IncomingMessage): string | undefined | { readonly outcome: Outcome } => {
    try {
      return keyOf !== undefined ? keyOf(event) : readHeader(message, HeaderNames.partitionKey)
    } catch (defect) {
      return { outcome: decide(Exit.die(defect), message.deliveryCount, maxDeliver, backoff) }
    }
  }

  // One `matchCause` rather than `exit` + `map`, and no named closure per call (tools that keep function names, like
  // tsx running the sources, wrap each one in a `defineProperty`): this runs once per delivery.
  const failureAt = (attempt: number) => (cause: Cause.Cause<unknown>): Outcome =>
    decide(Exit.failCause(cause), attempt, maxDeliver, backoff)
  const runOnce = (event: A, delivery: Delivery): Effect.Effect<Outcome> =>
    Effect.matchCause(Effect.suspend(() => handler(event, delivery)), {
      onSuccess: acked,
      onFailure: failureAt(delivery.attempt)
    })

  // A message delivered more often than `maxDeliver` never got an outcome for some of its deliveries (the consumer
  // crashed or was drained mid-handler each time); dead-letter it instead of letting it crash consumers forever.
  const overdue = (message: IncomingMessage): Outcome | undefined =>
    message.deliveryCount > maxDeliver
      ? {
        _tag: "DeadLetter",
        reason: `delivered ${message.deliveryCount} times without an outcome (maxDeliver ${maxDeliver}); ` +
          "the consumer may crash or be stopped while handling it",
        errorTag: "MaxDeliverExceeded",
        attempts: message.deliveryCount
      }
      : undefined

  if (config.ordering === "none") {
    return (message) => {
      const stop = overdue(message)
      if (stop !== undefined) return Effect.succeed(stop)
      const decoded = config.decode(message, config.topic)
      if (decoded instanceof DecodeError) return Effect.succeed(deadLetterOf(decoded, message))
      const key = keyOrFailure(decoded, message)
      if (typeof key === "object") return Effect.succeed(key.outcome)
      return runOnce(decoded, makeDelivery(message, key, message.deliveryCount))
    }
  }

  // Ordered by key: deliveries with the same key run one at a time in arrival order, different keys run concurrently
  // (at most `concurrency` handlers). A failure is retried in place, holding its key, because handing the message back
  // would let the next event of the same key overtake it; the backoff sleep holds the key but not a handler slot, so
  // a failing key parks only itself.
  const lanes = makeKeyedLanes(config.concurrency)
  const retryInPlace = (
    event: A,
    message: IncomingMessage,
    key: string | undefined,
    attempt: number,
    withPermit: <X>(effect: Effect.Effect<X>) => Effect.Effect<X>
  ): Effect.Effect<Outcome> =>
    Effect.flatMap(withPermit(runOnce(event, makeDelivery(message, key, attempt))), (outcome) =>
      outcome._tag === "Nak"
        ? Effect.andThen(
          Effect.sleep(outcome.delay),
          Effect.suspend(() => retryInPlace(event, message, key, attempt + 1, withPermit))
        )
        : Effect.succeed(outcome))
  return (message) => {
    const stop = overdue(message)
    if (stop !== undefined) return Effect.succeed(stop)
    const decoded = config.decode(message, config.topic)
    if (decoded instanceof DecodeError) return Effect.succeed(deadLetterOf(decoded, message))
    const key = keyOrFailure(decoded, message)
    if (typeof key === "object") return Effect.succeed(key.outcome)
    return lanes.run(key ?? message.subject, (withPermit) =>
      retryInPlace(decoded, message, key, message.deliveryCount, withPermit))
  }
}

const deadLetterOf = (error: DecodeError, message: IncomingMessage): Outcome => ({
  _tag: "DeadLetter",
  reason: error.message,
  errorTag: "DecodeError",
  attempts: message.deliveryCount
})
