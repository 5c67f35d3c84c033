/**
 * Consumer lag: gauges of each live consumer's backlog (pending, ack-pending, redelivered), read from the transport's
 * optional `consumers` capability, once (`consumerLag`) or on a schedule (`layerConsumerLag`).
 *
 * @module
 */
import { type ConsumerLag, type HealthError, type PublishDepth, Transport } from "@cqbus/core"
import { Options } from "@cqbus/core/backend"
import { type Duration, Effect, Layer, Metric, Schedule } from "effect"
import { checkLagOptions } from "./internal/checks.ts"

/**
 * Options of `consumerLag` and `layerConsumerLag`.
 *
 * @since 0.1.0
 * @category models
 */
export interface ConsumerLagOptions {
  /** Attributes added to every series, e.g. `{ service: "search" }` (default none). */
  readonly attributes?: Readonly<Record<string, string>>
}

/** Gauges fed from fields of one record, each `[field, metric name, description]`. */
const gaugesOf = <F extends string>(
  specs: ReadonlyArray<readonly [F, string, string]>
): ReadonlyArray<{ readonly field: F; readonly gauge: Metric.Gauge<number> }> =>
  specs.map(([field, name, description]) => ({ field, gauge: Metric.gauge(name, { description }) }))

/** The three lag gauges, each fed from one field of a `ConsumerLag`. */
const LAG_GAUGES = gaugesOf<"pending" | "ackPending" | "redelivered">([
  ["pending", "messaging_consumer_pending_messages", "Messages stored for a consumer and not yet delivered to it."],
  ["ackPending", "messaging_consumer_ack_pending_messages", "Messages delivered to a consumer and not yet acknowledged."],
  [
    "redelivered",
    "messaging_consumer_redelivered_messages",
    "Messages of a consumer delivered more than once (or waiting to be) and not yet acknowledged."
  ]
])

/** The publisher's depth (the transport's `publishing` capability), one gauge per field of a `PublishDepth`. */
const PUBLISH_GAUGES = gaugesOf<"inFlight" | "waiting">([
  [
    "inFlight",
    "messaging_publisher_in_flight_messages",
    "Publishes sent and awaiting the broker's confirmation (on NATS, their PubAck)."
  ],
  [
    "waiting",
    "messaging_publisher_waiting_messages",
    "Publishes waiting for a free slot, a connection or a stream leader before they can go out."
  ]
])

/**
 * Reads the transport's live consumers (its `consumers` capability) once and sets three gauges per topic and group:
 * `messaging_consumer_pending_messages` (stored, not yet delivered), `messaging_consumer_ack_pending_messages`
 * (delivered, not yet acknowledged) and `messaging_consumer_redelivered_messages` (redelivered or waiting for a
 * redelivery, not yet acknowledged), with `messaging_destination_name` (the topic or pattern) and, for a group,
 * `messaging_consumer_group_name`. Ephemeral consumers of one topic share one series (their sum), so series do not
 * multiply with generated consumer names. A series whose consumer is gone drops to 0 (a gauge cannot be removed
 * from the registry). A transport without the capability records nothing; one that cannot answer fails with its
 * `HealthError` and leaves the gauges as they were. Where the transport has the `publishing` capability, the publisher's
 * depth is set too: `messaging_publisher_in_flight_messages` (sent, awaiting confirmation) and
 * `messaging_publisher_waiting_messages` (waiting for a slot or a connection).
 *
 * Each call of `consumerLag(options)` remembers its own series, so create it once and run it as often as needed
 * (`layerConsumerLag` and `prometheusHandler` do).
 *
 * @example
 * ```ts
 * import { EventBus } from "@cqbus/core"
 * import { consumerLag, prometheus } from "@cqbus/metrics"
 * import { Effect } from "effect"
 *
 * const lag = consumerLag()
 * const text = Effect.runPromise(Effect.andThen(lag, prometheus()).pipe(Effect.provide(EventBus.layerMemory())))
 * ```
 *
 * @since 0.1.0
 * @category consumer lag
 */
export const consumerLag = (options: ConsumerLagOptions = {}): Effect.Effect<void, HealthError, Transport.Transport> => {
  Options.orThrow(checkLagOptions(options, "consumerLag"))
  const extra = options.attributes ?? {}
  // Label sets recorded by an earlier read, by a key of their labels, so a vanished consumer can be set to 0.
  const known = new Map<string, Record<string, string>>()
  const record = (lags: ReadonlyArray<ConsumerLag>): Effect.Effect<void> => {
    const totals = new Map<string, { readonly attributes: Record<string, string>; pending: number; ackPending: number; redelivered: number }>()
    for (const lag of lags) {
      const key = JSON.stringify([lag.topic, lag.group ?? null])
      let total = totals.get(key)
      if (total === undefined) {
        const attributes: Record<string, string> = { ...extra, messaging_destination_name: lag.topic }
        if (lag.group !== undefined) attributes.messaging_consumer_group_name = lag.group
        total = { attributes, pending: 0, ackPending: 0, redelivered: 0 }
        totals.set(key, total)
      }
      total.pending += lag.pending
      total.ackPending += lag.ackPending
      total.redelivered += lag.redelivered
    }
    const updates: Array<Effect.Effect<void>> = []
    for (const [key, attributes] of known) {
      if (!totals.has(key)) {
        for (const { gauge } of LAG_GAUGES) updates.push(Metric.update(Metric.withAttributes(gauge, attributes), 0))
        known.delete(key)
      }
    }
    for (const [key, total] of totals) {
      known.set(key, total.attributes)
      for (const { field, gauge } of LAG_GAUGES) {
        updates.push(Metric.update(Metric.withAttributes(gauge, total.attributes), total[field]))
      }
    }
    return Effect.all(updates, { discard: true })
  }
  const recordDepth = (depth: PublishDepth): Effect.Effect<void> =>
    Effect.all(
      PUBLISH_GAUGES.map(({ field, gauge }) => Metric.update(Metric.withAttributes(gauge, extra), depth[field])),
      { discard: true }
    )
  return Effect.flatMap(Effect.service(Transport.Transport), (transport) =>
    Effect.andThen(
      transport.publishing === undefined ? Effect.void : Effect.flatMap(transport.publishing, recordDepth),
      transport.consumers === undefined ? Effect.void : Effect.flatMap(transport.consumers, record)
    ))
}

/**
 * A layer that runs `consumerLag` every `interval` (default 15 seconds) for its lifetime, for exporters that read the
 * registry on their own schedule (an OpenTelemetry metric reader, a push gateway). A failed read is skipped; the next
 * one tries again. `prometheusHandler` reads the lag on every scrape and needs no polling.
 *
 * @since 0.1.0
 * @category consumer lag
 */
export const layerConsumerLag = (
  options: ConsumerLagOptions & { readonly interval?: Duration.Input } = {}
): Layer.Layer<never, never, Transport.Transport> => {
  Options.orThrow(Options.first(
    () => checkLagOptions(options, "layerConsumerLag"),
    () => Options.duration("layerConsumerLag.interval", options.interval, { min: "100 millis", max: "1 days" })
  ))
  const read = consumerLag(options).pipe(Effect.ignore)
  return Layer.effectDiscard(
    Effect.forkScoped(Effect.repeat(read, Schedule.spaced(options.interval ?? "15 seconds")))
  )
}
