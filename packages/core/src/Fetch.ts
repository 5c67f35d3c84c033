/**
 * Fetch batches: pull up to `max` stored events of a durable group at once and handle them together, the way a job
 * that uploads or writes in bulk wants them (the power-station uploader's `PullSubscribe` + `Fetch(60, MaxWait 5s)`).
 * A full batch comes at once; a partial one when `expires` passes. Each message of the batch still gets its own
 * outcome, decided by the same rule as a subscription's delivery (`Verdict.classify` through the bus's `decide`):
 * success acks, `RetryLater` redelivers after its delay, any other failure redelivers with the backoff until
 * `maxDeliver`, then dead-letters; `Reject` and an undecodable body dead-letter at once.
 *
 * `batch` hands the whole batch to one `BatchHandler`, which answers with one `Result` per event; `each` runs an
 * ordinary `Handler` per event of the batch. Both run over the `fetch` capability of the `Transport` in context
 * (memory and NATS have it), so the same code runs on every backend; a backend without it fails with a
 * `SubscribeError` reason `Unsupported`. The group is the same durable consumer a `subscribe` with that group uses.
 *
 * A long-running fetcher is a loop of batches: `Fetch.batch(...).pipe(Effect.forever)` (docs/operations.md,
 * "Fetch batches").
 *
 * @module
 */
import type { DescMessage, MessageShape } from "@bufbuild/protobuf"
import { type Cause, type Context, Duration, Effect, Exit, Result } from "effect"
import * as Backoff from "./Backoff.ts"
import { type InvalidTopic, SubscribeError } from "./Errors.ts"
import type { EventDef } from "./EventDef.ts"
import type { Delivery, Handler } from "./Handler.ts"
import { decodeEvent } from "./internal/decode.ts"
import { decide, makeProcess, makeSteps, type ProcessConfig } from "./internal/process.ts"
import { checkFetchOptions } from "./internal/checks.ts"
import { checkTopic } from "./Topic.ts"
import { type DeliverPolicy, type IncomingMessage, type Outcome, Transport } from "./Transport.ts"

/**
 * Options of one fetch. Only `group` is required.
 *
 * @since 0.1.0
 * @category models
 */
export interface FetchOptions {
  /** The durable group (consumer) to fetch for: the same group a `subscribe` with this name uses. */
  readonly group: string
  /** The most events in one batch (default 100; 1 to 10,000). */
  readonly max?: number
  /** How long to wait for the batch to fill before handling what came (default 5 s; 1 ms to 1 hour). */
  readonly expires?: Duration.Input
  /** Deliveries (first one included) before a failing event is dead-lettered (default 5; 1 to 10,000). */
  readonly maxDeliver?: number
  /** Delay before a failed event is delivered again (default exponential from 200 ms, ×2, up to 1 minute). */
  readonly backoff?: Backoff.Backoff
  /** Where the group starts when it does not exist yet (default `"all"`). */
  readonly deliverPolicy?: DeliverPolicy
  /**
   * How long a fetched event may go without a sign of life before the backend redelivers it (default 30 s; 100 ms to
   * 1 day). While the handler runs, the backend keeps the batch alive itself.
   */
  readonly ackWait?: Duration.Input
  /** `each` only: handlers running at once over the batch (default 1: one after another, in batch order). */
  readonly concurrency?: number
  /** Log each failed delivery and each dead letter as one warning line (default true, as `EventBusConfig.logFailures`). */
  readonly logFailures?: boolean
}

/**
 * What one fetch did: how many events it fetched and what became of them. `fetched` is 0 when `expires` passed
 * without any.
 *
 * @since 0.1.0
 * @category models
 */
export interface FetchResult {
  readonly fetched: number
  /** Handled successfully and acknowledged. */
  readonly acked: number
  /** To be delivered again (after their backoff or `RetryLater` delay), to a later fetch or a subscription. */
  readonly retried: number
  /** Moved to the dead letters (`Reject`, undecodable, or `maxDeliver` reached). */
  readonly deadLettered: number
}

/**
 * One event of a batch with its delivery (attempt number, event id, headers, ...).
 *
 * @since 0.1.0
 * @category models
 */
export interface Fetched<A> {
  readonly event: A
  readonly delivery: Delivery
}

/**
 * Handles a batch and answers with one `Result` per event, in batch order: `Result.succeed()` acks, `Result.fail`
 * with `RetryLater` redelivers after its delay, with `Reject` dead-letters at once, with any other error redelivers
 * with the backoff (dead-lettered once `maxDeliver` is reached). A failure of the whole effect counts as that failure
 * for every event of the batch; an event without a result (a shorter array) counts as a defect.
 *
 * @since 0.1.0
 * @category models
 */
export interface BatchHandler<in A, out E = never, out R = never> {
  (batch: ReadonlyArray<Fetched<A>>): Effect.Effect<ReadonlyArray<Result.Result<void, E>>, E, R>
}

/**
 * The result that acknowledges an event of a batch.
 *
 * @since 0.1.0
 * @category constructors
 */
export const ack: Result.Result<void, never> = Result.succeed(undefined)

const DEFAULTS = {
  max: 100,
  expires: Duration.seconds(5),
  maxDeliver: 5,
  backoff: Backoff.exponential(),
  ackWait: Duration.seconds(30),
  concurrency: 1
} as const

/** What one fetch tallies as its batch is settled. */
const tally = (outcomes: ReadonlyArray<Outcome>, result: { fetched: number; acked: number; retried: number; deadLettered: number }) => {
  result.fetched += outcomes.length
  for (const outcome of outcomes) {
    if (outcome._tag === "Ack") result.acked++
    else if (outcome._tag === "DeadLetter") result.deadLettered++
    else result.retried++
  }
}

type StepsConfig<A> = Omit<ProcessConfig<A, unknown>, "handler" | "ordering" | "concurrency">

/**
 * One fetch of `event` over the transport's capability: checks the topic and options, then lets `processOf` (built
 * from the steps' configuration) handle the batch, and tallies the outcomes it returns.
 */
const fetchWith = <S extends DescMessage, R>(
  event: EventDef<S>,
  options: FetchOptions,
  processOf: (
    config: StepsConfig<MessageShape<S>>,
    context: Context.Context<R>
  ) => (batch: ReadonlyArray<IncomingMessage>) => Effect.Effect<ReadonlyArray<Outcome>>
): Effect.Effect<FetchResult, SubscribeError | InvalidTopic, Transport | R> =>
  Effect.gen(function*() {
    const topic = event.topic
    const invalid = checkTopic(topic, "pattern")
    if (invalid !== undefined) return yield* invalid
    const group = typeof options?.group === "string" ? options.group : undefined
    const problem = checkFetchOptions(options)
    if (problem !== undefined) {
      return yield* new SubscribeError({ topic, group, reason: "InvalidOptions", message: `cannot fetch ${topic}: ${problem.message}` })
    }
    const transport = yield* Transport
    if (transport.fetch === undefined) {
      return yield* new SubscribeError({
        topic,
        group,
        reason: "Unsupported",
        message: `cannot fetch ${topic}: the ${transport.name} transport cannot fetch batches`
      })
    }
    const context = yield* Effect.context<R>()
    const process = processOf({
      topic,
      group: options.group,
      decode: (message, topic) => decodeEvent(event, message, topic),
      keyOf: event.key,
      maxDeliver: options.maxDeliver ?? DEFAULTS.maxDeliver,
      backoff: options.backoff ?? DEFAULTS.backoff,
      logFailures: options.logFailures ?? true
    }, context)
    const result = { fetched: 0, acked: 0, retried: 0, deadLettered: 0 }
    yield* transport.fetch({
      topic,
      group: options.group,
      max: options.max ?? DEFAULTS.max,
      expires: Duration.fromInputUnsafe(options.expires ?? DEFAULTS.expires),
      deliverPolicy: options.deliverPolicy ?? "all",
      ackWait: Duration.fromInputUnsafe(options.ackWait ?? DEFAULTS.ackWait)
    }, (batch) => Effect.tap(process(batch), (outcomes) => Effect.sync(() => tally(outcomes, result))))
    return result as FetchResult
  })

/** A message that passed the checks before a run: what the batch handler sees of it. */
class Ready<A> implements Fetched<A> {
  constructor(readonly event: A, readonly delivery: Delivery) {}
}

/** The defect an event without a result from the batch handler counts as. */
const noResult = (index: number, length: number): Exit.Exit<void, unknown> =>
  Exit.die(new Error(`the batch handler returned ${length} results for a batch of more events; none for event ${index}`))

/**
 * The batch process: the checks before a run for each message (past `maxDeliver`, undecodable: settled without the
 * handler), one run of the batch handler for the rest, and each result turned into an outcome by the same rule as a
 * subscription's handler run.
 */
const batchProcess = <A, E, R>(handler: BatchHandler<A, E, R>) =>
(config: StepsConfig<A>, context: Context.Context<R>) => {
  const steps = makeSteps<A>(config)
  return (messages: ReadonlyArray<IncomingMessage>): Effect.Effect<ReadonlyArray<Outcome>> =>
    Effect.suspend(() => {
      // Per message of the batch: the outcome it was settled with before any run, or its place among `ready`.
      const slots: Array<Effect.Effect<Outcome> | number> = []
      const ready: Array<Ready<A>> = []
      messages.forEach((message, index) => {
        const prepared = steps.prepared(message, (event, key, message) =>
          new Ready(event, steps.delivery(message, key, message.deliveryCount)))
        if (prepared instanceof Ready) slots[index] = ready.push(prepared) - 1
        else slots[index] = prepared
      })
      const settle = (exits: (item: Ready<A>, at: number) => Exit.Exit<void, unknown>) =>
        Effect.forEach(messages, (message, index) => {
          const at = slots[index]!
          if (typeof at !== "number") return at
          const item = ready[at]!
          const exit = exits(item, at)
          return Exit.isSuccess(exit)
            ? Effect.succeed(decide(exit, message.deliveryCount, config.maxDeliver, config.backoff))
            : steps.failure(item.delivery)(exit.cause)
        })
      if (ready.length === 0) return settle(() => Exit.void)
      return Effect.matchCauseEffect(Effect.provideContext(Effect.suspend(() => handler(ready)), context), {
        onSuccess: (results) =>
          settle((_, at) => {
            const result = results[at]
            return result === undefined
              ? noResult(at, results.length)
              : Result.isSuccess(result)
              ? Exit.void
              : Exit.fail(result.failure)
          }),
        onFailure: (cause: Cause.Cause<E>) => settle(() => Exit.failCause(cause))
      })
    })
}

/**
 * Fetches one batch of `event` for `options.group` and hands it to `handler`, which answers with one `Result` per
 * event (see `BatchHandler`). Returns when the batch is settled: at once for a full batch, after `expires` for a
 * partial or empty one. Fails with `SubscribeError` (`InvalidOptions`, `Unsupported` on a backend without fetch,
 * `GroupConflict`, `Transport`) or `InvalidTopic`; handler failures are outcomes, never failures of the fetch.
 *
 * @example
 * ```ts
 * import { defineEvent, EventBus, Fetch, RetryLater } from "@cqbus/core"
 * import { AssetCreatedSchema } from "@cqbus/testkit/events"
 * import { Effect, Result } from "effect"
 *
 * const AssetCreated = defineEvent(AssetCreatedSchema)
 * const upload = Fetch.batch(AssetCreated, (batch) =>
 *   Effect.succeed(batch.map(({ event }) =>
 *     event.symbol === "" ? Result.fail(new RetryLater({ delay: "1 minute" })) : Fetch.ack
 *   )), { group: "uploader", max: 60, expires: "5 seconds" })
 * Effect.runPromise(upload.pipe(Effect.provide(EventBus.layerMemory())))
 * ```
 *
 * @since 0.1.0
 * @category fetching
 */
export const batch = <S extends DescMessage, E, R>(
  event: EventDef<S>,
  handler: BatchHandler<MessageShape<S>, E, R>,
  options: FetchOptions
): Effect.Effect<FetchResult, SubscribeError | InvalidTopic, Transport | R> =>
  fetchWith<S, R>(event, options, batchProcess(handler))

/**
 * Fetches one batch of `event` for `options.group` and runs `handler` for each event of it (up to `concurrency` at
 * once, default one after another), each settled exactly as a subscription's delivery. Returns when the batch is
 * settled; fails as `batch` does.
 *
 * @since 0.1.0
 * @category fetching
 */
export const each = <S extends DescMessage, E, R>(
  event: EventDef<S>,
  handler: Handler<MessageShape<S>, E, R>,
  options: FetchOptions
): Effect.Effect<FetchResult, SubscribeError | InvalidTopic, Transport | R> =>
  fetchWith<S, R>(event, options, (config, context) => {
    const concurrency = options.concurrency ?? DEFAULTS.concurrency
    const process = makeProcess<MessageShape<S>, E>({
      ...config,
      handler: (event, delivery) => Effect.provideContext(handler(event, delivery), context),
      ordering: "none",
      concurrency
    })
    return (messages) => Effect.forEach(messages, process, { concurrency })
  })
