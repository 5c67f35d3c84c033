/**
 * The subscription of an ephemeral topic: a core-NATS subscription on the topic (a queue subscription for a group, so
 * one member gets each event), with the same handler budget and drain as a JetStream consumer but nothing to
 * acknowledge: the server keeps nothing, so every delivery is the only one (at most once). What cannot be redelivered is
 * dead-lettered instead, so a failure is never lost silently: a failed run (`Nak`), a `DeadLetter`, a handler
 * interrupted by the drain, and an event received but not started before the drain's budget ran out
 * (docs/semantics.md, "Ephemeral topics").
 */
import type { Outcome } from "@cqbus/core"
import type { IncomingMessage } from "@cqbus/core/backend"
import { type Msg, type NatsConnection, nuid, type Subscription } from "@nats-io/nats-core"
import { Duration, Effect, type Scope } from "effect"
import type { DeadLetterOutcome, DeadLetterSource, DeadLetterWriter } from "./deadLetters.ts"
import { deniedSubscribeSubject } from "./errors.ts"
import { failIfRefused, HandlerSlots } from "./handlerSlots.ts"
import { type HeaderSource, headerSourceOf } from "./headers.ts"
import { NatsDelivery } from "./natsDelivery.ts"

/**
 * Events received while every handler slot is taken wait in a buffer this long at most; beyond it an event is dropped
 * (at most once, like the server's own slow-consumer cut-off) and counted in a warning line.
 */
const MAX_BUFFERED = 65_536
/** How long closing may spend storing the dead letters of events received and never started. */
const LEFTOVER_BUDGET = "10 seconds"
/** At most one warning line about dropped events per this many milliseconds. */
const DROP_WARNING_MS = 10_000

/** What a core subscription works with. */
export interface CoreConsumerConfig {
  readonly nc: NatsConnection
  /** The ephemeral topic (a concrete subject). */
  readonly topic: string
  /** The group, as the core-NATS queue group. */
  readonly group: string | undefined
  readonly maxInFlight: number
  readonly drainTimeout: Duration.Duration
  readonly process: (message: IncomingMessage) => Effect.Effect<Outcome>
  readonly deadLetters: DeadLetterWriter
}

/** A running core subscription, as the transport's capabilities read it. */
export interface CoreConsumer {
  readonly draining: () => boolean
  /** When the oldest running handler started (`Date.now()` ms), `undefined` when none runs. */
  readonly oldestRunningSince: () => number | undefined
  /** Handlers running now. */
  readonly running: () => number
  /** Events received and waiting for a handler slot. */
  readonly buffered: () => number
}

/** One event of an ephemeral topic: delivered once, stored nowhere. */
class CoreDelivery extends NatsDelivery implements IncomingMessage, DeadLetterSource {
  readonly deliveryCount = 1
  readonly redeliverable = false
  readonly sequence = undefined
  readonly stream = undefined
  readonly consumer: string
  constructor(msg: Msg, headers: HeaderSource, consumer: string) {
    super(msg, headers)
    this.consumer = consumer
  }
  /** The publisher's CloudEvents `ce-time`: no server stored the event. */
  get publishedAt(): Date | undefined {
    const time = this.header("ce-time")
    const date = time === undefined ? undefined : new Date(time)
    return date !== undefined && Number.isFinite(date.getTime()) ? date : undefined
  }
  /**
   * The event id and its replay count make the dead letter's record unique (a replayed event keeps its `ce-id`; failing
   * again, its new record must not be dropped as a duplicate of the first); an event without an id gets a fresh one.
   */
  get recordKey(): string {
    const id = this.header("ce-id")
    return id === undefined ? `core:${nuid.next()}` : `core:${id}:${this.header("cqbus-replay-count") ?? 0}`
  }
}

/** Why an outcome other than `Ack` becomes a dead letter on an ephemeral topic. */
const deadLetterOf = (topic: string, outcome: Exclude<Outcome, { _tag: "Ack" }>): DeadLetterOutcome => {
  switch (outcome._tag) {
    case "DeadLetter":
      return outcome
    case "Nak":
      return {
        _tag: "DeadLetter",
        reason: `${outcome.error} (not redelivered: ${topic} is an ephemeral topic)`,
        errorTag: outcome.errorTag,
        attempts: 1
      }
    case "Handback":
      return {
        _tag: "DeadLetter",
        reason: `interrupted when the subscription closed; ${topic} is an ephemeral topic, so it cannot be handed back`,
        errorTag: "Interrupted",
        attempts: 1
      }
  }
}

const NOT_STARTED: DeadLetterOutcome = {
  _tag: "DeadLetter",
  reason: "received but not processed before the subscription closed (ephemeral topic: it cannot be handed back)",
  errorTag: "Interrupted",
  attempts: 0
}

/**
 * Starts a core subscription; it runs until the scope closes, then drains: no new events, the buffered and running
 * ones finish within `drainTimeout`, running handlers are then interrupted and what is left is dead-lettered. Fails
 * with the server's permission error when this connection may not subscribe to the topic.
 */
export const startCoreConsumer = (config: CoreConsumerConfig): Effect.Effect<CoreConsumer, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const { maxInFlight, nc, topic } = config
    const context = yield* Effect.context<never>()
    const runFork = Effect.runForkWith(context)
    const name = config.group ?? `cqbus_core_${nuid.next()}`
    let stopping = false
    let dropped = 0
    /** The drain is over: whatever still arrives is not taken (the subscription is closed or closing). */
    let finished = false
    let warnedAt = 0

    const settle = (delivery: CoreDelivery, outcome: Outcome): void => {
      if (outcome._tag === "Ack") return release()
      // Storing the record is a publish awaiting its PubAck; the slot stays taken until it is done.
      runFork(config.deadLetters.store(delivery, deadLetterOf(topic, outcome))).addObserver(release)
    }

    // Buffered events go on starting during the drain: they were received, and only the drain's budget ends them.
    const slots: HandlerSlots<CoreDelivery> = new HandlerSlots<CoreDelivery>({
      maxInFlight,
      runFork,
      process: config.process,
      settle,
      canStart: () => true,
      // Nothing comes again: a failure is dead-lettered at once.
      defectDelay: Duration.zero
    })
    const release = () => slots.release()

    const reportDropped = () => {
      if (dropped === 0) return
      const count = dropped
      dropped = 0
      runFork(Effect.logWarning(
        `cqbus: ${count} event(s) on the ephemeral topic ${topic} dropped: ${MAX_BUFFERED} were already waiting for ` +
          `a handler (raise the subscription's concurrency, or make the topic persistent)`
      ))
    }

    const onMessage = (msg: Msg) => {
      if (stopping && finished) return
      const delivery = new CoreDelivery(msg, headerSourceOf(msg), name)
      if (slots.free && slots.buffered === 0) return slots.start(delivery)
      if (slots.buffered >= MAX_BUFFERED) {
        dropped++
        const now = Date.now()
        if (now - warnedAt >= DROP_WARNING_MS) {
          warnedAt = now
          reportDropped()
        }
        return
      }
      slots.push(delivery)
    }

    /** Why the server refused this subscription (no subscribe permission on the topic). */
    let denied: unknown = undefined
    const sub: Subscription = nc.subscribe(topic, {
      ...(config.group === undefined ? {} : { queue: config.group }),
      callback: (error, msg) => {
        if (error !== null) {
          if (deniedSubscribeSubject(error) === topic) denied ??= error
          return
        }
        try {
          onMessage(msg)
        } catch (cause) {
          runFork(Effect.logError(`cqbus: cannot process an event on the ephemeral topic ${topic}`, cause))
        }
      }
    })

    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        stopping = true
        // Drain (UNSUB + flush) rather than unsubscribe: events the server already sent still arrive and are queued.
        if (!nc.isClosed() && !sub.isClosed()) {
          yield* Effect.timeoutOption(Effect.promise(() => sub.drain().catch(() => undefined)), "2 seconds")
        }
        // A drain that did not finish in time must not leave the subscription receiving after the scope closed.
        if (!sub.isClosed()) sub.unsubscribe()
        if (Duration.toMillis(config.drainTimeout) > 0) yield* Effect.timeoutOption(slots.idle, config.drainTimeout)
        finished = true
        reportDropped()
        // What never started is dead-lettered, many at a time and within a bound (each record awaits its PubAck): a
        // dead-letter stream without a leader must not hold the shutdown for every buffered event.
        const left = slots.takeBuffered()
        const stored = yield* Effect.timeoutOption(
          Effect.forEach(left, (delivery) => config.deadLetters.store(delivery, NOT_STARTED), { concurrency: 256, discard: true }),
          LEFTOVER_BUDGET
        )
        if (stored._tag === "None") {
          yield* Effect.logWarning(
            `cqbus: the dead letters of ${left.length} event(s) on the ephemeral topic ${topic} that were not processed ` +
              `before the subscription closed could not all be stored within ${LEFTOVER_BUDGET}; those not stored are lost`
          )
        }
        slots.interrupt()
        if (slots.running > 0) yield* Effect.timeoutOption(slots.idle, "2 seconds")
      })
    )

    // A subscription the server refuses fails typed instead of never delivering.
    yield* failIfRefused(nc, sub, () => denied, () => {
      stopping = true
    })
    return {
      draining: () => stopping,
      oldestRunningSince: () => slots.oldestRunningSince(),
      running: () => slots.running,
      buffered: () => slots.buffered
    }
  })
