/**
 * Delivery and publish metrics: a counter and a duration histogram per delivery (`metrics`) and per publish
 * (`metricsPublish`), named after the OpenTelemetry messaging semantic conventions and measured on Effect's `Clock`, so
 * a `TestClock` gives exact buckets.
 *
 * @module
 */
import type { Delivery, Middleware, PublishAck, PublishError, PublishMiddleware } from "@cqbus/core"
import type { OutgoingMessage } from "@cqbus/core/backend"
import { Verdict } from "@cqbus/core"
import { Options } from "@cqbus/core/backend"
import { Cause, Effect, Exit, Metric, Result } from "effect"
import { attributes } from "./internal/checks.ts"

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
  Options.fields(prefix, options, (o) =>
    Options.first(() => attributes(`${prefix}.attributes`, o.attributes), () => boundaries(`${prefix}.boundaries`, o.boundaries))
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
 * `messaging_process_duration_seconds` (histogram, seconds, `DURATION_BOUNDARIES`), by topic, group, `outcome` and,
 * on failure, `error_type`. `outcome` is the `kind` of `Verdict.of(exit, delivery)` (`ack`, `retry`, `dead_letter`),
 * the rule the bus itself follows, so metrics, logs and the transport agree; `error_type` is the verdict's `errorTag`.
 * Undecodable bodies are dead-lettered before any handler runs, so no middleware counts them. The failure passes
 * through unchanged. Put it outermost, so it measures the retried, recovered handler once per delivery:
 * `pipe(handler, recovery(), retry(), metrics())`.
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
