/**
 * The heartbeat: a publisher/subscriber pair that proves the whole path works, not only the connection. A probe
 * publishes a small event on a heartbeat topic and waits until this process's own subscription receives it; the
 * round-trip time is what the health report shows. `bus.check` can pass while deliveries are stuck (a stream that
 * rejects writes, a consumer that never gets messages); the heartbeat cannot.
 *
 * @module
 */
import { EventBus, type InvalidTopic, newEventId, type PublishError, type SubscribeError } from "@cqbus/core"
import { Context, Deferred, Effect, Exit, Layer, type Scope } from "effect"

/**
 * Options of `Heartbeat.layer` and `Heartbeat.make`.
 *
 * @since 0.1.0
 * @category models
 */
export interface HeartbeatOptions {
  /**
   * The topic probes travel on (default `cqbus.health.v1.probe`: outside the CQC events namespace, so consumers of
   * `cqc.events.v1.>` never see probes; the NATS backend captures `cqbus.health.>` in a small stream of its own,
   * whatever the events stream's subjects are). A topic of your own must lie inside a stream's subjects on NATS.
   * A probe is an empty body with a `ce-id` starting with `health-probe-`.
   */
  readonly topic?: string
}

/**
 * The heartbeat service: `probe` publishes one probe and succeeds with the round trip in milliseconds once this
 * process has received it back. It does not time out on its own; the health router bounds it with the check timeout.
 *
 * @since 0.1.0
 * @category models
 */
export interface HeartbeatShape {
  readonly topic: string
  readonly probe: Effect.Effect<number, PublishError | InvalidTopic>
}

/**
 * The default heartbeat topic: outside `cqc.events.v1.>` (a custom events stream need not capture it, and Go consumers
 * of the events never see it); the NATS backend stores it in its own health stream.
 */
const DEFAULT_TOPIC = "cqbus.health.v1.probe"

/** Probe ids start with this, so other consumers of the topic can tell probes apart. */
const PROBE_PREFIX = "health-probe-"

const EMPTY = new Uint8Array(0)

const HeartbeatKey: Context.ServiceClass<Heartbeat, "@cqbus/health/Heartbeat", HeartbeatShape> = Context.Service<
  Heartbeat,
  HeartbeatShape
>()("@cqbus/health/Heartbeat")

/**
 * The heartbeat service. Add `Heartbeat.layer()` to the layer of the runtime the health router runs on, and the
 * router's full report gains a `heartbeat:responseTime` check (and `/ready` too, with `heartbeat: "ready"`).
 *
 * @example
 * ```ts
 * import { EventBus } from "@cqbus/core"
 * import { Heartbeat } from "@cqbus/health"
 * import { Effect, Layer } from "effect"
 *
 * const layer = Heartbeat.layer().pipe(Layer.provideMerge(EventBus.layerMemory()))
 * const roundTrip = Effect.gen(function*() {
 *   const heartbeat = yield* Heartbeat.Heartbeat
 *   return yield* heartbeat.probe // milliseconds
 * })
 * ```
 *
 * @since 0.1.0
 * @category services
 */
export class Heartbeat extends HeartbeatKey {}

/**
 * Subscribes (ephemerally, from new messages on) to the heartbeat topic for the scope's lifetime and returns the
 * probe. Each process sees every process's probes and completes only its own.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: HeartbeatOptions = {}
): Effect.Effect<HeartbeatShape, SubscribeError | InvalidTopic, EventBus.EventBus | Scope.Scope> =>
  Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const topic = options.topic ?? DEFAULT_TOPIC
    const waiting = new Map<string, Deferred.Deferred<void>>()
    // Ephemeral: a probe is only worth something to the process that sent it, and nothing should pile up for a
    // process that is gone. One delivery attempt: a probe that fails to be handled is simply late. Internal: the
    // bus-wide middleware (logging, metrics) does not see probes, and the consumer is no backlog entry.
    yield* bus.subscribeRaw(topic, (_, delivery) =>
      Effect.sync(() => {
        const done = waiting.get(delivery.eventId)
        if (done !== undefined) Deferred.doneUnsafe(done, Exit.void)
      }), { concurrency: 4, maxDeliver: 1, internal: true })
    const probe: Effect.Effect<number, PublishError | InvalidTopic> = Effect.suspend(() => {
      const id = `${PROBE_PREFIX}${newEventId()}`
      return Effect.gen(function*() {
        const done = yield* Deferred.make<void>()
        waiting.set(id, done)
        const clock = yield* Effect.clockWith(Effect.succeed)
        const started = clock.monotonicTimeNanosUnsafe()
        // Internal: the probe is no application traffic for the publish logs and metrics (its delivery is internal too).
        yield* bus.publishRaw(topic, EMPTY, { eventId: id, internal: true })
        yield* Deferred.await(done)
        return Number(clock.monotonicTimeNanosUnsafe() - started) / 1e6
      }).pipe(Effect.ensuring(Effect.sync(() => waiting.delete(id))))
    })
    return { topic, probe }
  })

/**
 * The heartbeat as a layer: `make` for the layer's lifetime.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: HeartbeatOptions = {}): Layer.Layer<Heartbeat, SubscribeError | InvalidTopic, EventBus.EventBus> =>
  Layer.effect(Heartbeat, make(options))
