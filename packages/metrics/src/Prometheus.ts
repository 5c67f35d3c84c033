/**
 * Prometheus exposition: the current Effect `Metric` registry as text exposition format 0.0.4 (`prometheus`), and the
 * scrape endpoint as a Web-standard fetch handler that reads the consumer lag first (`prometheusHandler`).
 *
 * @module
 */
import { Transport } from "@cqbus/core"
import { Options } from "@cqbus/core/backend"
import { Effect, Metric, Option } from "effect"
import { consumerLag, type ConsumerLagOptions } from "./ConsumerLag.ts"
import { checkLagOptions } from "./internal/checks.ts"

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
  Options.fields(prefix, options, (o) => Options.func(`${prefix}.include`, o.include))

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
    : Effect.flatMap(Effect.serviceOption(Transport.Transport), (transport) =>
      Option.isNone(transport)
        ? Effect.void
        : lag.pipe(Effect.provideService(Transport.Transport, transport.value), Effect.ignore))
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
