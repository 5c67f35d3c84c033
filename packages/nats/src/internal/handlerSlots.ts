/**
 * The handler budget both delivery loops share: the JetStream pull loop (`pullLoop.ts`) and the core subscription of
 * an ephemeral topic (`coreConsumer.ts`). Each runs at most `maxInFlight` handlers, buffers what arrives beyond that,
 * settles a handler that finishes at once in the same tick (so the answers of one socket read share one write), keeps
 * the slower ones as background fibers (their start time is the consumer's oldest unacked age; the drain waits for them
 * and then interrupts them), and starts buffered deliveries in a loop rather than by recursion. What differs between
 * the loops is passed in: how an outcome is settled, when no more handlers may start, and what follows a release (the
 * pull loop pulls). Also here: the check after subscribing that the server did not refuse the subscription.
 */
import type { Outcome } from "@cqbus/core"
import type { IncomingMessage } from "@cqbus/core/backend"
import type { NatsConnection, Subscription } from "@nats-io/nats-core"
import { type Duration, Effect, type Exit, type Fiber } from "effect"

const HANDBACK: Outcome = { _tag: "Handback" }

/** A delivery a slot can run: the message the handler sees, and when its handler started in the background. */
export interface SlotDelivery extends IncomingMessage {
  /** Set (`Date.now()` ms) when its handler goes on running in the background. */
  since: number
}

/** The loop-specific parts of a `HandlerSlots`. */
export interface HandlerSlotsOptions<D extends SlotDelivery> {
  readonly maxInFlight: number
  /** Forks a fiber with the loop's services. */
  readonly runFork: <A, E>(effect: Effect.Effect<A, E>) => Fiber.Fiber<A, E>
  readonly process: (message: IncomingMessage) => Effect.Effect<Outcome>
  /**
   * Answers a delivery's outcome (a handler interrupted or dying gives `Handback`); must call `release()` once the
   * slot is free again (at once, or after an asynchronous step such as storing a dead letter).
   */
  readonly settle: (delivery: D, outcome: Outcome) => void
  /** Whether buffered deliveries may still start (the pull loop stops starting them when its drain begins). */
  readonly canStart: () => boolean
  /** Called after buffered deliveries were started on a release (the pull loop pulls for the freed room). */
  readonly afterPump?: () => void
  /** The backoff of the `Nak` a delivery gets when `process` throws instead of returning an effect. */
  readonly defectDelay: Duration.Duration
}

/** Handler slots of one consumer: the running handlers, the buffer of deliveries waiting for a slot, the drain's waits. */
export class HandlerSlots<D extends SlotDelivery> {
  readonly #options: HandlerSlotsOptions<D>
  readonly #maxInFlight: number
  #running = 0
  readonly #queue: Array<D> = []
  #head = 0
  /** Deliveries whose handler runs in the background, with their fibers (to interrupt at the end of a drain). */
  readonly #background = new Map<D, Fiber.Fiber<Outcome>>()
  #pumping = false
  #idleWaiter: (() => void) | undefined = undefined

  constructor(options: HandlerSlotsOptions<D>) {
    this.#options = options
    this.#maxInFlight = options.maxInFlight
  }

  /** Handlers running now (including those whose outcome is still being settled). */
  get running(): number {
    return this.#running
  }

  /** Whether a handler slot is free. */
  get free(): boolean {
    return this.#running < this.#maxInFlight
  }

  /** Deliveries waiting for a slot. */
  get buffered(): number {
    return this.#queue.length - this.#head
  }

  /** Buffers a delivery until a slot is free (`release` starts it). */
  push(delivery: D): void {
    this.#queue.push(delivery)
  }

  /** Runs the handler of a delivery in a slot (the caller checked `free`). */
  start(delivery: D): void {
    this.#running++
    let effect: Effect.Effect<Outcome>
    try {
      effect = this.#options.process(delivery)
    } catch (defect) {
      // A bug in the bus or a user function it calls eagerly: answer it as a failure instead of leaking the slot.
      effect = Effect.as(Effect.logError("cqbus: processing a delivery failed before its handler ran", defect), {
        _tag: "Nak",
        delay: this.#options.defectDelay,
        error: String(defect),
        errorTag: "Defect"
      })
    }
    const fiber = this.#options.runFork(effect)
    // Settled in the same tick when the handler finished synchronously: no observer, no map entry.
    const exit = fiber.pollUnsafe()
    if (exit !== undefined) return this.#options.settle(delivery, exit._tag === "Success" ? exit.value : HANDBACK)
    delivery.since = Date.now()
    this.#background.set(delivery, fiber)
    fiber.addObserver((exit) => this.#finish(delivery, exit))
  }

  #finish(delivery: D, exit: Exit.Exit<Outcome>): void {
    this.#background.delete(delivery)
    this.#options.settle(delivery, exit._tag === "Success" ? exit.value : HANDBACK)
  }

  /** A settled delivery gives its slot back: start the next buffered ones, or wake the drain when all are done. */
  release(): void {
    this.#running--
    if (this.#options.canStart()) this.pump()
    if (this.#idleWaiter !== undefined && this.#running === 0 && this.#head === this.#queue.length) this.#idleWaiter()
  }

  /**
   * Starts buffered deliveries while slots are free, then `afterPump`. A loop, not recursion: a handler that finishes
   * at once settles inside `start`, which calls `release` again, and a long buffer must not become a deep stack.
   */
  pump(): void {
    if (this.#pumping) return
    this.#pumping = true
    const queue = this.#queue
    while (this.#running < this.#maxInFlight && this.#head < queue.length && this.#options.canStart()) {
      const next = queue[this.#head]!
      queue[this.#head++] = undefined as unknown as D
      if (this.#head === queue.length) {
        queue.length = 0
        this.#head = 0
      }
      this.start(next)
    }
    this.#pumping = false
    this.#options.afterPump?.()
  }

  /** The deliveries whose handler runs in the background (keep-alives, the recreated consumer's floor). */
  backgroundDeliveries(): IterableIterator<D> {
    return this.#background.keys()
  }

  /** Calls `f` for each buffered delivery, oldest first. */
  forEachBuffered(f: (delivery: D) => void): void {
    for (let i = this.#head; i < this.#queue.length; i++) f(this.#queue[i]!)
  }

  /** Empties the buffer (for the drain), returning what was in it, oldest first. */
  takeBuffered(): Array<D> {
    const left = this.#queue.slice(this.#head)
    this.#queue.length = 0
    this.#head = 0
    return left
  }

  /**
   * When the oldest handler still running in the background started (`Date.now()` ms), `undefined` when none runs.
   * The map keeps insertion order and `since` is set just before each insertion: the first is the oldest.
   */
  oldestRunningSince(): number | undefined {
    const first = this.#background.keys().next()
    return first.done === true ? undefined : first.value.since
  }

  /** Completes once no handler runs and nothing is buffered (the drain waits on it, with a timeout). */
  readonly idle: Effect.Effect<void> = Effect.callback<void>((resume) => {
    if (this.#running <= 0 && this.#head === this.#queue.length) return resume(Effect.void)
    this.#idleWaiter = () => {
      this.#idleWaiter = undefined
      resume(Effect.void)
    }
  })

  /** Interrupts the handlers running in the background; they settle (as `Handback`) through their observers. */
  interrupt(): void {
    for (const fiber of this.#background.values()) fiber.interruptUnsafe()
  }
}

/**
 * After subscribing: a subscription the server refuses (no permission) is answered with one asynchronous `-ERR`, and
 * nothing would ever arrive. A round trip settles it (the server answers what was sent before the PONG), so the
 * subscribe fails typed instead of never delivering: with `denied()` the refusal the subscription's callback (or status
 * listener) recorded, after `onRefused` and unsubscribing.
 */
export const failIfRefused = (
  nc: NatsConnection,
  sub: Subscription,
  denied: () => unknown,
  onRefused: () => void
): Effect.Effect<void, unknown> =>
  Effect.promise(() => nc.flush().catch(() => undefined)).pipe(
    Effect.andThen(Effect.yieldNow),
    Effect.andThen(Effect.suspend(() => {
      const error = denied()
      if (error === undefined) return Effect.void
      onRefused()
      if (!sub.isClosed()) sub.unsubscribe()
      return Effect.fail(error)
    }))
  )
