/**
 * `@cqbus/metrics`: Effect `Metric`s and `Tracer` spans for every delivery and publish, named after the OpenTelemetry
 * messaging semantic conventions, plus a Prometheus text exposition of the metric registry.
 *
 * - `metrics` (handler middleware): `messaging_client_consumed_messages_total` and
 *   `messaging_process_duration_seconds` per delivery, by topic, group and outcome.
 * - `metricsPublish` (publish middleware): `messaging_client_sent_messages_total` and
 *   `messaging_client_operation_duration_seconds` per publish, by topic and outcome.
 * - `tracingPublish` / `tracing`: a producer span `send <topic>` that writes a W3C `traceparent` header, and a consumer
 *   span `process <topic>` whose parent is the span that header names, so one trace spans publisher and consumer.
 * - `consumerLag` / `consumerLagPolling`: gauges of each live consumer's backlog (pending, ack-pending, redelivered), read
 *   from the transport's optional `consumers` capability.
 * - `prometheus`: the current `Metric` registry as Prometheus text exposition format 0.0.4; `prometheusHandler`: the
 *   same as a Web-standard `(request) => Promise<Response>` handler (Hono, `Bun.serve`, `Deno.serve`), which reads the
 *   consumer lag first.
 *
 * Durations are measured on Effect's `Clock`, so a `TestClock` gives exact buckets.
 *
 * @module
 */
import {
  type ConsumerLag,
  type Delivery,
  type HealthError,
  type Middleware,
  Options,
  type OutgoingMessage,
  type PublishAck,
  type PublishError,
  type PublishMiddleware,
  Transport,
  Verdict
} from "@cqbus/core"
import { Cause, Duration, Effect, Exit, Layer, Metric, Option, Result, Schedule, Tracer } from "effect"

/**
 * The OpenTelemetry semantic-convention bucket boundaries for messaging durations, in seconds.
 *
 * @since 0.1.0
 * @category constants
 */
export const DURATION_BOUNDARIES: ReadonlyArray<number> = [
  0.005,
  0.01,
  0.025,
  0.05,
  0.075,
  0.1,
  0.25,
  0.5,
  0.75,
  1,
  2.5,
  5,
  7.5,
  10
]

/**
 * Options of `metrics` and `metricsPublish`.
 *
 * @since 0.1.0
 * @category models
 */
export interface MetricsOptions {
  /** Attributes added to every series, e.g. `{ service: "search" }` (default none). */
  readonly attributes?: Readonly<Record<string, string>>
  /**
   * Histogram bucket boundaries in seconds (default `DURATION_BOUNDARIES`). The registry keeps the boundaries a
   * histogram was first used with, so give every `metrics()` (and every `metricsPublish()`) the same ones.
   */
  readonly boundaries?: ReadonlyArray<number>
}

/** Attribute values are label values: one line each. */
const attributes = (option: string, value: unknown): Options.Check =>
  Options.record(option, value, (name, v) => Options.text(name, v, { maxLength: 1024 }))

/** Histogram boundaries in seconds: positive, finite, strictly increasing (a registry refuses anything else). */
const boundaries = (option: string, value: unknown): Options.Check =>
  Options.first(
    () => Options.list(option, value, (name, v) => Options.number(name, v, { min: Number.MIN_VALUE, max: 1_000_000 }), { nonEmpty: true }),
    () => {
      const list = (value ?? []) as ReadonlyArray<number>
      const at = list.findIndex((b, i) => i > 0 && b <= list[i - 1]!)
      return at < 0 ? undefined : {
        option: `${option}[${at}]`,
        message: `${option} must be strictly increasing, got ${list[at]} after ${list[at - 1]}`
      }
    }
  )

/** `MetricsOptions` of `metrics` and `metricsPublish` (docs/reliability.md, "Options"). */
const checkMetricsOptions = (options: unknown, prefix: string): Options.Check =>
  Options.first(() => Options.object(prefix, options), () => {
    const o = (options ?? {}) as Record<string, unknown>
    return Options.first(() => attributes(`${prefix}.attributes`, o.attributes), () => boundaries(`${prefix}.boundaries`, o.boundaries))
  })

const checkLagOptions = (options: unknown, prefix: string): Options.Check =>
  Options.first(
    () => Options.object(prefix, options),
    () => attributes(`${prefix}.attributes`, (options as ConsumerLagOptions | undefined)?.attributes)
  )

/** A counter and a histogram of one series (one attribute set). */
interface Series {
  readonly count: Metric.Counter<number>
  readonly duration: Metric.Histogram<number>
}

/**
 * The counter and histogram of each attribute set, made once with the attributes inside. `Metric.withAttributes` on
 * every update would rebuild the series key (a JSON serialization of the attributes) on every delivery and publish,
 * which cost more than the rest of the plugin together; a metric made with its attributes computes its key once.
 * One entry per series, so this map grows exactly as the registry does.
 */
const seriesCache = (
  counter: { readonly name: string; readonly description: string },
  histogram: { readonly name: string; readonly description: string },
  boundaries: ReadonlyArray<number>
): (key: string, attributes: () => Record<string, string>) => Series => {
  const cache = new Map<string, Series>()
  return (key, attributes) => {
    let series = cache.get(key)
    if (series === undefined) {
      const all = attributes()
      series = {
        count: Metric.counter(counter.name, { description: counter.description, incremental: true, attributes: all }),
        duration: Metric.histogram(histogram.name, { description: histogram.description, boundaries, attributes: all })
      }
      cache.set(key, series)
    }
    return series
  }
}

/** Adds one observation of `seconds` to a series: one effect for both metrics. */
const observe = (series: Series, seconds: number): Effect.Effect<void> =>
  Effect.contextWith((context) => {
    series.count.updateUnsafe(1, context)
    series.duration.updateUnsafe(seconds, context)
    return Effect.void
  })

/** Seconds between two monotonic clock readings. */
const secondsSince = (startNanos: bigint, endNanos: bigint): number => Number(endNanos - startNanos) / 1e9

/**
 * Counts and times each delivery: `messaging_client_consumed_messages_total` (counter) and
 * `messaging_process_duration_seconds` (histogram, seconds, OpenTelemetry semconv buckets `DURATION_BOUNDARIES`,
 * measured on Effect's `Clock`), with the attributes `messaging_destination_name` (the topic), `messaging_operation`
 * (`"process"`), `messaging_consumer_group_name` (for a group subscription), `outcome` and, on failure, `error_type`.
 *
 * `outcome` is the `kind` of `Verdict.of(exit, delivery)`, the rule the bus itself follows: `"ack"` on success,
 * `"dead_letter"` when the handler fails with `Reject` or fails, dies or is interrupted on its last allowed attempt
 * (`delivery.attempt >= delivery.maxDeliver`), and `"retry"` otherwise; `error_type` is the verdict's `errorTag` (a
 * failure's `_tag`, `"Defect"` for a defect, `"Interrupted"` for an interruption, such as a drain, whose message is
 * handed back). Bodies that cannot be decoded are dead-lettered
 * before any handler runs, so no middleware sees them: count those from the dead letters. The failure passes through
 * unchanged. Put it outermost, so it measures the retried,
 * recovered handler once per delivery: `pipe(handler, recovery(), retry(), metrics())`.
 *
 * @example
 * ```ts
 * import { EventBus } from "@cqbus/core"
 * import { metrics, metricsPublish } from "@cqbus/metrics"
 * const layer = EventBus.layerMemory({ middleware: [metrics()], publishMiddleware: [metricsPublish()] })
 * ```
 *
 * @since 0.1.0
 * @category middleware
 */
export const metrics = (options: MetricsOptions = {}): Middleware => {
  Options.orThrow(checkMetricsOptions(options, "metrics"))
  const series = seriesCache(
    { name: "messaging_client_consumed_messages_total", description: "Number of messages delivered to a handler, by outcome." },
    { name: "messaging_process_duration_seconds", description: "Duration of processing one delivery, in seconds." },
    options.boundaries ?? DURATION_BOUNDARIES
  )
  const extra = options.attributes ?? {}
  const record = (delivery: Delivery, seconds: number, exit: Exit.Exit<void, unknown>): Effect.Effect<void> => {
    const verdict = Verdict.of(exit, delivery)
    const outcome = verdict.kind
    const errorType = verdict.kind === "ack" ? undefined : verdict.errorTag
    const key = `${delivery.topic}\u0000${delivery.group ?? ""}\u0000${outcome}\u0000${errorType ?? ""}`
    return observe(series(key, () => {
      const attributes: Record<string, string> = {
        ...extra,
        messaging_destination_name: delivery.topic,
        messaging_operation: "process",
        outcome
      }
      if (delivery.group !== undefined) attributes.messaging_consumer_group_name = delivery.group
      if (errorType !== undefined) attributes.error_type = errorType
      return attributes
    }), seconds)
  }
  return (handler) => (event, delivery) =>
    Effect.clockWith((clock) => {
      const started = clock.monotonicTimeNanosUnsafe()
      return Effect.suspend(() => handler(event, delivery)).pipe(
        Effect.onExit((exit) =>
          Effect.clockWith((end) => record(delivery, secondsSince(started, end.monotonicTimeNanosUnsafe()), exit))
        )
      )
    })
}

/**
 * Counts and times each publish: `messaging_client_sent_messages_total` (counter) and
 * `messaging_client_operation_duration_seconds` (histogram, seconds, `DURATION_BOUNDARIES`, measured on Effect's
 * `Clock`), with the attributes `messaging_destination_name` (the topic), `messaging_operation` (`"send"`), `outcome`
 * (`"ok"` or `"error"`) and, on failure, `error_type` (the `PublishError`'s `reason`, or `"Defect"` when the transport
 * died). Put it last in `publishMiddleware` so it runs outermost and times the other publish middleware too.
 *
 * @example
 * ```ts
 * import { EventBus } from "@cqbus/core"
 * import { metricsPublish } from "@cqbus/metrics"
 * const layer = EventBus.layerMemory({ publishMiddleware: [metricsPublish({ attributes: { service: "orders" } })] })
 * ```
 *
 * @since 0.1.0
 * @category middleware
 */
export const metricsPublish = (options: MetricsOptions = {}): PublishMiddleware => {
  Options.orThrow(checkMetricsOptions(options, "metricsPublish"))
  const series = seriesCache(
    { name: "messaging_client_sent_messages_total", description: "Number of messages published, by outcome." },
    {
      name: "messaging_client_operation_duration_seconds",
      description: "Duration of a messaging operation (publish), in seconds."
    },
    options.boundaries ?? DURATION_BOUNDARIES
  )
  const extra = options.attributes ?? {}
  const record = (
    message: OutgoingMessage,
    seconds: number,
    exit: Exit.Exit<PublishAck, PublishError>
  ): Effect.Effect<void> => {
    let errorType: string | undefined
    if (Exit.isFailure(exit)) {
      const failure = Cause.findError(exit.cause)
      errorType = Result.isSuccess(failure)
        ? failure.success.reason
        : Result.isSuccess(Cause.findDefect(exit.cause))
        ? "Defect"
        : "Interrupted"
    }
    return observe(series(`${message.topic}\u0000${errorType ?? ""}`, () => {
      const attributes: Record<string, string> = {
        ...extra,
        messaging_destination_name: message.topic,
        messaging_operation: "send",
        outcome: errorType === undefined ? "ok" : "error"
      }
      if (errorType !== undefined) attributes.error_type = errorType
      return attributes
    }), seconds)
  }
  return (next) => (message) =>
    Effect.clockWith((clock) => {
      const started = clock.monotonicTimeNanosUnsafe()
      return Effect.suspend(() => next(message)).pipe(
        Effect.onExit((exit) =>
          Effect.clockWith((end) => record(message, secondsSince(started, end.monotonicTimeNanosUnsafe()), exit))
        )
      )
    })
}

// ---------------------------------------------------------------------------------------------------------------------
// Tracing
// ---------------------------------------------------------------------------------------------------------------------

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/

/**
 * Parses a W3C `traceparent` header into a remote (external) span, or `undefined` when it is malformed: wrong shape,
 * upper-case hex, version `ff`, an all-zero trace or span id, or trailing data on version `00`.
 *
 * @since 0.1.0
 * @category tracing
 */
export const parseTraceparent = (value: string | undefined): Tracer.ExternalSpan | undefined => {
  if (value === undefined) return undefined
  const match = TRACEPARENT.exec(value.trim())
  if (match === null) return undefined
  const [, version, traceId, spanId, flags, rest] = match
  if (version === "ff" || (version === "00" && rest !== undefined)) return undefined
  if (/^0+$/.test(traceId!) || /^0+$/.test(spanId!)) return undefined
  return Tracer.externalSpan({ traceId: traceId!, spanId: spanId!, sampled: (parseInt(flags!, 16) & 1) === 1 })
}

/**
 * The W3C `traceparent` header value of a span: `00-<traceId>-<spanId>-<flags>`, flags `01` when the span is
 * sampled, `00` otherwise.
 *
 * @since 0.1.0
 * @category tracing
 */
export const formatTraceparent = (span: Tracer.AnySpan): string =>
  `00-${span.traceId}-${span.spanId}-${span.sampled ? "01" : "00"}`

/**
 * Wraps each publish in a producer span `send <topic>` (span kind `producer`; attributes `messaging.system` `"cqbus"`,
 * `messaging.destination.name`, `messaging.message.id`) and writes its W3C `traceparent` into the outgoing headers, so
 * `tracing()` on the consumer side continues the trace. The span's parent is the publisher's current span, if any; an
 * existing `tracestate` header is kept as it is.
 *
 * @example
 * ```ts
 * import { EventBus } from "@cqbus/core"
 * import { tracing, tracingPublish } from "@cqbus/metrics"
 * const layer = EventBus.layerMemory({ middleware: [tracing()], publishMiddleware: [tracingPublish()] })
 * ```
 *
 * @since 0.1.0
 * @category tracing
 */
export const tracingPublish = (): PublishMiddleware => (next) => (message) =>
  Effect.withSpan(
    Effect.flatMap(Effect.currentSpan.pipe(Effect.orDie), (span) =>
      next({ ...message, headers: { ...message.headers, traceparent: formatTraceparent(span) } })),
    `send ${message.topic}`,
    {
      kind: "producer",
      attributes: {
        "messaging.system": "cqbus",
        "messaging.destination.name": message.topic,
        "messaging.message.id": message.eventId
      }
    }
  )

/**
 * Runs each delivery in a consumer span `process <topic>` (span kind `consumer`; attributes `messaging.system`
 * `"cqbus"`, `messaging.destination.name`, `messaging.message.id` and, for a group subscription,
 * `messaging.consumer.group.name`). Its parent is the remote span named by the delivery's `traceparent` header (as
 * `tracingPublish` writes it); without one, or with a malformed one, the span's parent is the consumer's current span,
 * if any. The span ends with the handler's exit; the failure passes through unchanged.
 *
 * @example
 * ```ts
 * import { Effect, pipe } from "effect"
 * import { tracing } from "@cqbus/metrics"
 * const handler = pipe((_: unknown) => Effect.void, tracing())
 * ```
 *
 * @since 0.1.0
 * @category tracing
 */
export const tracing = (): Middleware => (handler) => (event, delivery) => {
  const attributes: Record<string, unknown> = {
    "messaging.system": "cqbus",
    "messaging.destination.name": delivery.topic,
    "messaging.message.id": delivery.eventId
  }
  if (delivery.group !== undefined) attributes["messaging.consumer.group.name"] = delivery.group
  // One header, not the record: a backend that parses wire headers lazily then builds nothing else.
  const parent = parseTraceparent(delivery.header("traceparent"))
  return Effect.withSpan(
    Effect.suspend(() => handler(event, delivery)),
    `process ${delivery.topic}`,
    parent === undefined ? { kind: "consumer", attributes } : { kind: "consumer", attributes, parent }
  )
}

// ---------------------------------------------------------------------------------------------------------------------
// Consumer lag
// ---------------------------------------------------------------------------------------------------------------------

/**
 * Options of `consumerLag` and `consumerLagPolling`.
 *
 * @since 0.1.0
 * @category models
 */
export interface ConsumerLagOptions {
  /** Attributes added to every series, e.g. `{ service: "search" }` (default none). */
  readonly attributes?: Readonly<Record<string, string>>
}

/** The three lag gauges, each fed from one field of a `ConsumerLag`. */
const LAG_GAUGES: ReadonlyArray<{ readonly field: "pending" | "ackPending" | "redelivered"; readonly gauge: Metric.Gauge<number> }> = [
  {
    field: "pending",
    gauge: Metric.gauge("messaging_consumer_pending_messages", {
      description: "Messages stored for a consumer and not yet delivered to it."
    })
  },
  {
    field: "ackPending",
    gauge: Metric.gauge("messaging_consumer_ack_pending_messages", {
      description: "Messages delivered to a consumer and not yet acknowledged."
    })
  },
  {
    field: "redelivered",
    gauge: Metric.gauge("messaging_consumer_redelivered_messages", {
      description: "Messages of a consumer delivered more than once (or waiting to be) and not yet acknowledged."
    })
  }
]

/**
 * Reads the transport's live consumers (its `consumers` capability) once and sets three gauges per topic and group:
 * `messaging_consumer_pending_messages` (stored, not yet delivered), `messaging_consumer_ack_pending_messages`
 * (delivered, not yet acknowledged) and `messaging_consumer_redelivered_messages` (redelivered or waiting for a
 * redelivery, not yet acknowledged), with `messaging_destination_name` (the topic or pattern) and, for a group,
 * `messaging_consumer_group_name`. Ephemeral consumers of one topic share one series (their sum), so series do not
 * multiply with generated consumer names. A series whose consumer is gone drops to 0 (a gauge cannot be removed
 * from the registry). A transport without the capability records nothing; one that cannot answer fails with its
 * `HealthError` and leaves the gauges as they were.
 *
 * Each call of `consumerLag(options)` remembers its own series, so create it once and run it as often as needed
 * (`consumerLagPolling` and `prometheusHandler` do).
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
export const consumerLag = (options: ConsumerLagOptions = {}): Effect.Effect<void, HealthError, Transport> => {
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
  return Effect.flatMap(Effect.service(Transport), (transport) =>
    transport.consumers === undefined ? Effect.void : Effect.flatMap(transport.consumers, record))
}

/**
 * A layer that runs `consumerLag` every `interval` (default 15 seconds) for its lifetime, for exporters that read the
 * registry on their own schedule (an OpenTelemetry metric reader, a push gateway). A failed read is skipped; the next
 * one tries again. `prometheusHandler` reads the lag on every scrape and needs no polling.
 *
 * @since 0.1.0
 * @category consumer lag
 */
export const consumerLagPolling = (
  options: ConsumerLagOptions & { readonly interval?: Duration.Input } = {}
): Layer.Layer<never, never, Transport> => {
  Options.orThrow(Options.first(
    () => checkLagOptions(options, "consumerLagPolling"),
    () => Options.duration("consumerLagPolling.interval", options.interval, { min: "100 millis", max: "1 days" })
  ))
  const read = consumerLag(options).pipe(Effect.ignore)
  return Layer.effectDiscard(
    Effect.forkScoped(Effect.repeat(read, Schedule.spaced(options.interval ?? "15 seconds")))
  )
}

// ---------------------------------------------------------------------------------------------------------------------
// Prometheus exposition
// ---------------------------------------------------------------------------------------------------------------------

/**
 * Options of `prometheus`.
 *
 * @since 0.1.0
 * @category models
 */
export interface PrometheusOptions {
  /** Which metrics to render, by their Effect metric id (default all). */
  readonly include?: (id: string) => boolean
}

/**
 * The content type of Prometheus text exposition format 0.0.4, for the HTTP response that serves `prometheus()`.
 *
 * @since 0.1.0
 * @category constants
 */
export const PROMETHEUS_CONTENT_TYPE: string = "text/plain; version=0.0.4; charset=utf-8"

const checkPrometheusOptions = (options: unknown, prefix: string): Options.Check =>
  Options.first(
    () => Options.object(prefix, options),
    () => Options.func(`${prefix}.include`, (options as PrometheusOptions | undefined)?.include)
  )

/** A metric name: invalid characters become `_`, and a leading digit gets a `_` prefix. */
const metricName = (id: string): string => {
  const name = id.replace(/[^a-zA-Z0-9_:]/g, "_")
  return /^[a-zA-Z_:]/.test(name) ? name : `_${name}`
}

/** A label name: like a metric name without `:`; names starting with `__` are reserved, so they get an `x` prefix. */
const labelName = (key: string): string => {
  const name = key.replace(/[^a-zA-Z0-9_]/g, "_")
  const valid = /^[a-zA-Z_]/.test(name) ? name : `_${name}`
  return valid.startsWith("__") ? `x${valid}` : valid
}

const escapeLabelValue = (value: string): string =>
  value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, "\\\"")

const escapeHelp = (value: string): string => value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")

const formatValue = (value: number | bigint): string =>
  typeof value === "bigint"
    ? value.toString()
    : Number.isNaN(value)
    ? "NaN"
    : value === Infinity
    ? "+Inf"
    : value === -Infinity
    ? "-Inf"
    : String(value)

const formatLabels = (labels: ReadonlyArray<readonly [string, string]>): string =>
  labels.length === 0
    ? ""
    : `{${labels.map(([key, value]) => `${labelName(key)}="${escapeLabelValue(value)}"`).join(",")}}`

const sample = (
  name: string,
  labels: ReadonlyArray<readonly [string, string]>,
  value: number | bigint
): string => `${name}${formatLabels(labels)} ${formatValue(value)}`

const PROMETHEUS_TYPE: Record<Metric.Metric.Type, string> = {
  Counter: "counter",
  Gauge: "gauge",
  Frequency: "counter",
  Histogram: "histogram",
  Summary: "summary"
}

/** The name a metric family is exposed under: counters (and frequencies) end in `_total`. */
const familyName = (snapshot: Metric.Metric.Snapshot): string => {
  const name = metricName(snapshot.id)
  return (snapshot.type === "Counter" || snapshot.type === "Frequency") && !name.endsWith("_total")
    ? `${name}_total`
    : name
}

const renderSamples = (name: string, snapshot: Metric.Metric.Snapshot, out: Array<string>): void => {
  const labels: ReadonlyArray<readonly [string, string]> = Object.entries(snapshot.attributes ?? {})
  switch (snapshot.type) {
    case "Counter":
      out.push(sample(name, labels, snapshot.state.count))
      return
    case "Gauge":
      out.push(sample(name, labels, snapshot.state.value))
      return
    case "Frequency":
      for (const [key, count] of snapshot.state.occurrences) {
        out.push(sample(name, [...labels, ["key", key]], count))
      }
      return
    case "Histogram": {
      const state = snapshot.state
      for (const [boundary, cumulative] of state.buckets) {
        out.push(sample(`${name}_bucket`, [...labels, ["le", formatValue(boundary)]], cumulative))
      }
      out.push(sample(`${name}_bucket`, [...labels, ["le", "+Inf"]], state.count))
      out.push(sample(`${name}_sum`, labels, state.sum))
      out.push(sample(`${name}_count`, labels, state.count))
      return
    }
    case "Summary": {
      const state = snapshot.state
      for (const [quantile, value] of state.quantiles) {
        out.push(sample(name, [...labels, ["quantile", formatValue(quantile)]], value ?? NaN))
      }
      out.push(sample(`${name}_sum`, labels, state.sum))
      out.push(sample(`${name}_count`, labels, state.count))
      return
    }
  }
}

/**
 * Renders the current Effect `Metric` registry (`Metric.snapshot`) as Prometheus text exposition format 0.0.4 (serve
 * it with `PROMETHEUS_CONTENT_TYPE`): one `# HELP` (the metric's description, else its id) and `# TYPE` line per metric family,
 * then one sample per series. Counters are exposed with a `_total` suffix (added when the id lacks it), histograms as
 * cumulative `_bucket{le="..."}` samples ending with `le="+Inf"`, plus `_sum` and `_count`; summaries as `quantile`
 * samples plus `_sum` and `_count`; frequencies as a counter with a `key` label. Names are sanitized to
 * `[a-zA-Z_:][a-zA-Z0-9_:]*`, label values escaped (`\\`, `"`, newline). Families are sorted by name, so the output is
 * stable; when two metric types share a name, only the first type's series are rendered.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { prometheus } from "@cqbus/metrics"
 * const text = Effect.runSync(prometheus())
 * ```
 *
 * @since 0.1.0
 * @category exposition
 */
export const prometheus = (options: PrometheusOptions = {}): Effect.Effect<string> => {
  Options.orThrow(checkPrometheusOptions(options, "prometheus"))
  return Effect.map(Metric.snapshot, (snapshots) => {
      const families = new Map<string, Array<Metric.Metric.Snapshot>>()
      for (const snapshot of snapshots) {
        if (options.include !== undefined && !options.include(snapshot.id)) continue
        const name = familyName(snapshot)
        const family = families.get(name)
        if (family === undefined) families.set(name, [snapshot])
        else if (family[0]!.type === snapshot.type) family.push(snapshot)
      }
      const out: Array<string> = []
      for (const name of [...families.keys()].sort()) {
        const family = families.get(name)!
        const first = family[0]!
        const description = family.find((s) => s.description !== undefined)?.description ?? first.id
        out.push(`# HELP ${name} ${escapeHelp(description)}`)
        out.push(`# TYPE ${name} ${PROMETHEUS_TYPE[first.type]}`)
        for (const snapshot of family) renderSamples(name, snapshot, out)
      }
      return out.length === 0 ? "" : `${out.join("\n")}\n`
    })
}

/**
 * What `prometheusHandler` runs its Effects with: a `ManagedRuntime` (anything with its `runPromise`).
 *
 * @since 0.1.0
 * @category models
 */
export interface PrometheusRuntime {
  readonly runPromise: <A, E>(effect: Effect.Effect<A, E>, options?: Effect.RunOptions) => Promise<A>
}

/**
 * Options of `prometheusHandler`.
 *
 * @since 0.1.0
 * @category models
 */
export interface PrometheusHandlerOptions extends PrometheusOptions {
  /**
   * The runtime whose metric registry is rendered and whose `Transport` the consumer lag is read from (default:
   * `Effect.runPromise`, the global registry, no lag).
   */
  readonly runtime?: PrometheusRuntime
  /** Read the consumer lag gauges before each rendering (default `true`, when the runtime provides a `Transport`). */
  readonly consumerLag?: boolean | ConsumerLagOptions
}

/**
 * The Prometheus scrape endpoint as a Web-standard fetch handler: `(request) => Promise<Response>` answering
 * `prometheus()` with `PROMETHEUS_CONTENT_TYPE` and `Cache-Control: no-store`, after reading the consumer lag from the
 * runtime's `Transport` (a failed read keeps the previous gauge values: a scrape must not fail because the broker
 * is away). A plain function rather than a Hono handler, so this package needs no HTTP framework: mount it with
 * `app.get("/metrics", (c) => handler(c.req.raw))` in Hono, or pass it to `Bun.serve({ fetch })` / `Deno.serve`.
 *
 * @example
 * ```ts
 * import { EventBus } from "@cqbus/core"
 * import { prometheusHandler } from "@cqbus/metrics"
 * import { ManagedRuntime } from "effect"
 * import { Hono } from "hono"
 *
 * const runtime = ManagedRuntime.make(EventBus.layerMemory())
 * const metricsEndpoint = prometheusHandler({ runtime })
 * const app = new Hono().get("/metrics", (c) => metricsEndpoint(c.req.raw))
 * ```
 *
 * @since 0.1.0
 * @category exposition
 */
export const prometheusHandler = (options: PrometheusHandlerOptions = {}): (request: Request) => Promise<Response> => {
  Options.orThrow(Options.first(
    () => checkPrometheusOptions(options, "prometheusHandler"),
    () => Options.object("prometheusHandler.runtime", options.runtime),
    // A runtime without `runPromise` would fail every scrape.
    () =>
      options.runtime === undefined
        ? undefined
        : Options.func("prometheusHandler.runtime.runPromise", options.runtime.runPromise ?? null),
    () =>
      typeof options.consumerLag === "boolean" ? undefined : checkLagOptions(options.consumerLag, "prometheusHandler.consumerLag")
  ))
  const run = options.runtime?.runPromise ?? Effect.runPromise
  const lag = options.consumerLag === false
    ? undefined
    : consumerLag(options.consumerLag === true || options.consumerLag === undefined ? {} : options.consumerLag)
  const readLag: Effect.Effect<void> = lag === undefined
    ? Effect.void
    : Effect.flatMap(Effect.serviceOption(Transport), (transport) =>
      Option.isNone(transport)
        ? Effect.void
        : lag.pipe(Effect.provideService(Transport, transport.value), Effect.ignore))
  const render = Effect.andThen(readLag, prometheus(options.include === undefined ? {} : { include: options.include }))
  return async (request) => {
    let text: string
    try {
      text = await run(render, { signal: request.signal })
    } catch (cause) {
      // A disposed runtime (the service is shutting down) or an interrupted scrape: say so instead of a bare 500.
      return new Response(`metrics unavailable: ${cause instanceof Error ? cause.message : String(cause)}\n`, {
        status: 503,
        headers: { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" }
      })
    }
    return new Response(text, { headers: { "content-type": PROMETHEUS_CONTENT_TYPE, "cache-control": "no-store" } })
  }
}
