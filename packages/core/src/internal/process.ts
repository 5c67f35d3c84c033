/**
 * Turns a handler into the `process` function a transport runs for each delivery: build the `Delivery`, decode, run
 * the handler, and map its exit to an `Outcome` through `Verdict.classify`. This is the one place where "the handler's
 * result decides delivery" (DESIGN §1.2) is implemented, so every backend behaves the same; it also writes the bus's
 * default warning line for a failed delivery or a dead letter (DESIGN §4), unless a plugin reports that delivery.
 */
import { Cause, Effect, Exit } from "effect"
import type { Backoff } from "../Backoff.ts"
import { HeaderNames, readHeader } from "../Envelope.ts"
import { DecodeError, errorMessage as describe, errorTag as tagOf } from "../Errors.ts"
import type { Delivery, Handler } from "../Handler.ts"
import type { Headers, IncomingMessage, Outcome } from "../Transport.ts"
import { classify, isReported, type Verdict } from "../Verdict.ts"
import { makeKeyedLanes } from "./lanes.ts"
import { printable } from "./printable.ts"

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
  /** Write the default warning line for a failed delivery or a dead letter (default true; `EventBusConfig`). */
  readonly logFailures?: boolean
}

const ACK: Outcome = { _tag: "Ack" }
const ACKED: Effect.Effect<Outcome> = Effect.succeed(ACK)
const acked = (): Effect.Effect<Outcome> => ACKED

/**
 * The transport's `Outcome` of one handler run, built on `Verdict.classify` (the rule logs and metrics read too). A
 * failure on the last allowed attempt dead-letters with the last error as the reason, so exhausting `maxDeliver` never
 * drops a message.
 */
export const decide = (exit: Exit.Exit<void, unknown>, attempt: number, maxDeliver: number, backoff: Backoff): Outcome =>
  outcomeOf(classify(exit, attempt, maxDeliver), attempt, backoff)

const outcomeOf = (verdict: Verdict, attempt: number, backoff: Backoff): Outcome =>
  verdict.kind === "ack"
    ? ACK
    : verdict.kind === "retry"
    ? { _tag: "Nak", delay: verdict.delay ?? backoff(attempt), error: verdict.reason, errorTag: verdict.errorTag }
    : { _tag: "DeadLetter", reason: verdict.reason, errorTag: verdict.errorTag, attempts: attempt }

/** What the bus's default warning line says about one delivery. */
interface FailureFacts {
  readonly topic: string
  readonly group: string | undefined
  readonly eventId: string
  readonly attempt: number
  readonly maxDeliver: number
  readonly kind: "retry" | "dead_letter"
  readonly errorTag: string
  /** `error.type`: the error tag, or for a defect what was thrown (`TypeError`), more telling than `Defect`. */
  readonly errorType: string
  readonly error: unknown
  readonly reason: string
}

/**
 * The bus's default line for a failed delivery or a dead letter (DESIGN §4: failures are visible without plugins):
 * one warning per delivery, annotated like the logging plugin's lines. A defect's cause (its stack) is attached to the
 * line of the first delivery only, so a message that keeps dying prints its stack once, not once per retry.
 */
const warnFailure = (facts: FailureFacts, cause: Cause.Cause<unknown> | undefined): Effect.Effect<void> => {
  const where = `${facts.topic}${facts.group === undefined ? "" : ` (group ${facts.group})`}`
  const attempt = `attempt ${facts.attempt} of ${facts.maxDeliver}`
  // The event id is the peer's `ce-id`: escaped, so a CR or LF in it cannot forge a line of its own.
  const id = printable(facts.eventId)
  const text = facts.kind === "dead_letter"
    ? `delivery dead-lettered on ${where}, event ${id}, ${attempt}: ${
      facts.errorTag === "Reject" ? `Reject: ${facts.reason}` : facts.reason
    }`
    : `delivery failed on ${where}, event ${id}, ${attempt}; it will be redelivered: ${facts.reason}`
  const annotations: Record<string, unknown> = {
    "messaging.operation.type": "process",
    "messaging.destination.name": facts.topic,
    "messaging.message.id": facts.eventId,
    "cqbus.attempt": facts.attempt,
    "cqbus.max_deliver": facts.maxDeliver,
    "cqbus.outcome": facts.kind,
    "error.type": facts.errorType,
    "error.message": describe(facts.error)
  }
  if (facts.group !== undefined) {
    annotations["messaging.consumer.group.name"] = facts.group
    annotations["cqbus.group"] = facts.group
  }
  if (facts.kind === "dead_letter") annotations["cqbus.dead_letter.reason"] = facts.reason
  const line = cause === undefined ? Effect.logWarning(text) : Effect.logWarning(text, cause)
  return Effect.annotateLogs(line, annotations)
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
  get redeliverable(): boolean {
    return this.#message.redeliverable !== false
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

/** The event id of a message without building a `Delivery` (for lines about messages no handler ran for). */
const eventIdOf = (message: IncomingMessage): string =>
  readHeader(message, HeaderNames.id) ?? (message.sequence === undefined ? "" : `seq:${message.sequence}`)

/**
 * The steps every delivery goes through, for a caller that runs the handler its own way (`makeProcess` runs one
 * handler per delivery; `Fetch.batch` runs one batch handler for many): the same checks before a run and the same
 * verdict and default line after it, so a fetched message and a subscribed one are settled alike.
 */
export interface DeliverySteps<A> {
  /**
   * What a delivery goes through before its handler runs: addressed to another group by a dead-letter replay, past
   * `maxDeliver`, undecodable or without its ordering key, it is settled here (an `Outcome` effect) and the handler
   * never sees it; otherwise `run` gets the event. A continuation rather than a returned pair: this runs once per
   * delivery, and the pair would be one more allocation each time.
   */
  readonly prepared: <X>(
    message: IncomingMessage,
    run: (event: A, key: string | undefined, message: IncomingMessage) => X
  ) => X | Effect.Effect<Outcome>
  /** The `Delivery` a handler sees for `message` at `attempt`. */
  readonly delivery: (message: IncomingMessage, key: string | undefined, attempt: number) => Delivery
  /** The outcome of a handler run on `delivery` that ended with `cause`, with the default line unless reported. */
  readonly failure: (delivery: Delivery) => (cause: Cause.Cause<unknown>) => Effect.Effect<Outcome>
}

/** Builds the steps of `config` (its `handler`, `ordering` and `concurrency` are not used). */
export const makeSteps = <A>(
  config: Omit<ProcessConfig<A, unknown>, "handler" | "ordering" | "concurrency">
): DeliverySteps<A> => {
  const { backoff, group, keyOf, maxDeliver, topic } = config
  const logFailures = config.logFailures ?? true
  const makeDelivery = (message: IncomingMessage, key: string | undefined, attempt: number): Delivery =>
    new LazyDelivery(message, group, key, attempt, maxDeliver)

  /**
   * The outcome of a delivery that ended without a handler run (a body that cannot be decoded, a throwing key function,
   * a message delivered too often), with the default line for it: no plugin saw it, so the bus always reports it.
   */
  const withoutRun = (
    message: IncomingMessage,
    outcome: Outcome,
    errorTag: string,
    error: unknown,
    reason: string,
    cause?: Cause.Cause<unknown>
  ): Effect.Effect<Outcome> =>
    logFailures && outcome._tag !== "Ack" && outcome._tag !== "Handback"
      ? Effect.as(
        warnFailure({
          topic: message.subject,
          group,
          eventId: eventIdOf(message),
          attempt: message.deliveryCount,
          maxDeliver,
          kind: outcome._tag === "DeadLetter" ? "dead_letter" : "retry",
          errorTag,
          errorType: errorTag,
          error,
          reason
        }, cause),
        outcome
      )
      : Effect.succeed(outcome)

  // The key function is user code run outside any Effect: one that throws is a defect of this delivery (redelivered
  // with backoff, dead-lettered at maxDeliver), not an exception in the transport's callback.
  const keyOrFailure = (
    event: A,
    message: IncomingMessage
  ): string | undefined | { readonly outcome: Effect.Effect<Outcome> } => {
    try {
      return keyOf !== undefined ? keyOf(event) : readHeader(message, HeaderNames.partitionKey)
    } catch (defect) {
      const verdict = classify(Exit.die(defect), message.deliveryCount, maxDeliver, message.redeliverable !== false)
      const outcome = outcomeOf(verdict, message.deliveryCount, backoff)
      return verdict.kind === "ack"
        ? { outcome: Effect.succeed(outcome) }
        : {
          outcome: withoutRun(
            message,
            outcome,
            verdict.errorTag,
            verdict.error,
            `the ordering key function threw: ${verdict.reason}`,
            message.deliveryCount === 1 ? Cause.die(defect) : undefined
          )
        }
    }
  }

  // The failure path of one handler run: the verdict, and the default line unless a plugin reports this delivery.
  // A function returning an anonymous arrow, as before: no named closure per delivery (tools that keep function names,
  // like tsx running the sources, wrap each one in a `defineProperty`).
  const failureOf = (delivery: Delivery) => (cause: Cause.Cause<unknown>): Effect.Effect<Outcome> => {
    const attempt = delivery.attempt
    const verdict = classify(Exit.failCause(cause), attempt, maxDeliver, delivery.redeliverable !== false)
    const outcome = outcomeOf(verdict, attempt, backoff)
    if (verdict.kind === "ack" || !logFailures || isReported(delivery)) return Effect.succeed(outcome)
    return Effect.as(
      warnFailure({
        topic: delivery.topic,
        group,
        eventId: delivery.eventId,
        attempt,
        maxDeliver,
        kind: verdict.kind,
        errorTag: verdict.errorTag,
        errorType: verdict.ending === "defect" ? tagOf(verdict.error) : verdict.errorTag,
        error: verdict.error,
        reason: verdict.reason
      }, verdict.ending === "defect" && attempt === 1 ? cause : undefined),
      outcome
    )
  }
  // A message delivered more often than `maxDeliver` never got an outcome for some of its deliveries (the consumer
  // crashed or was drained mid-handler each time); dead-letter it instead of letting it crash consumers forever.
  const overdue = (message: IncomingMessage): Effect.Effect<Outcome> | undefined => {
    if (message.deliveryCount <= maxDeliver) return undefined
    const reason = `delivered ${message.deliveryCount} times without an outcome (maxDeliver ${maxDeliver}); ` +
      "the consumer may crash or be stopped while handling it"
    const outcome: Outcome = {
      _tag: "DeadLetter",
      reason,
      errorTag: "MaxDeliverExceeded",
      attempts: message.deliveryCount
    }
    return withoutRun(message, outcome, "MaxDeliverExceeded", reason, reason)
  }

  const undecodable = (error: DecodeError, message: IncomingMessage): Effect.Effect<Outcome> =>
    withoutRun(message, deadLetterOf(error, message), "DecodeError", error, error.message)

  const prepared = <X>(
    message: IncomingMessage,
    run: (event: A, key: string | undefined, message: IncomingMessage) => X
  ): X | Effect.Effect<Outcome> => {
    // A replay addressed to one group (`DeadLetters.replay`, header `cqbus-replay-group`) is acknowledged unseen by
    // every other subscription of the topic: they processed the event the first time, and must not do it twice. Here,
    // once, so every backend treats it alike (docs/operations.md, "Dead letters").
    const target = readHeader(message, HeaderNames.replayGroup)
    if (target !== undefined && target !== group) return ACKED
    const stop = overdue(message)
    if (stop !== undefined) return stop
    const decoded = config.decode(message, topic)
    if (decoded instanceof DecodeError) return undecodable(decoded, message)
    const key = keyOrFailure(decoded, message)
    if (typeof key === "object") return key.outcome
    return run(decoded, key, message)
  }

  return { prepared, delivery: makeDelivery, failure: failureOf }
}

/** Builds the `process` function of a subscription. */
export const makeProcess = <A, E>(config: ProcessConfig<A, E>): (message: IncomingMessage) => Effect.Effect<Outcome> => {
  const { handler } = config
  const { delivery: makeDelivery, failure: failureOf, prepared } = makeSteps<A>(config)

  // One `matchCauseEffect` rather than `exit` + `map`: this runs once per delivery, and success returns a shared
  // effect.
  const runOnce = (event: A, delivery: Delivery): Effect.Effect<Outcome> =>
    Effect.matchCauseEffect(Effect.suspend(() => handler(event, delivery)), {
      onSuccess: acked,
      onFailure: failureOf(delivery)
    })

  if (config.ordering === "none") {
    const runNow = (event: A, key: string | undefined, message: IncomingMessage): Effect.Effect<Outcome> =>
      runOnce(event, makeDelivery(message, key, message.deliveryCount))
    return (message) => prepared(message, runNow)
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
  const runInLane = (event: A, key: string | undefined, message: IncomingMessage): Effect.Effect<Outcome> =>
    lanes.run(key ?? message.subject, (withPermit) => retryInPlace(event, message, key, message.deliveryCount, withPermit))
  return (message) => prepared(message, runInLane)
}

const deadLetterOf = (error: DecodeError, message: IncomingMessage): Outcome => ({
  _tag: "DeadLetter",
  reason: error.message,
  errorTag: "DecodeError",
  attempts: message.deliveryCount
})
