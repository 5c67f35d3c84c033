/**
 * `@cqbus/metrics`: Effect `Metric`s and `Tracer` spans for every delivery and publish, named after the OpenTelemetry
 * messaging semantic conventions, plus a Prometheus text exposition of the metric registry.
 *
 * - `metrics` / `metricsPublish`: a counter and a duration histogram per delivery and per publish (`Metrics.ts`).
 * - `tracing` / `tracingPublish`: consumer and producer spans joined by the W3C `traceparent` header (`Tracing.ts`).
 * - `consumerLag` / `layerConsumerLag`: gauges of each live consumer's backlog (`ConsumerLag.ts`).
 * - `connectionMetrics` / `layerConnectionMetrics`: the broker connection's state, disconnects and reconnects
 *   (`ConnectionMetrics.ts`).
 * - `BacklogMonitor`: each consumer's backlog as a level (normal / warning / critical) and a stream of its changes
 *   (`BacklogMonitor.ts`).
 * - `prometheus` / `prometheusHandler`: the registry in Prometheus text format, and its scrape endpoint
 *   (`Prometheus.ts`).
 *
 * @module
 */
export * as BacklogMonitor from "./BacklogMonitor.ts"
export type { BacklogMonitorOptions, BacklogThresholds } from "./BacklogMonitor.ts"
export { connectionMetrics, type ConnectionMetricsOptions, layerConnectionMetrics } from "./ConnectionMetrics.ts"
export { consumerLag, type ConsumerLagOptions, layerConsumerLag } from "./ConsumerLag.ts"
export { DURATION_BOUNDARIES, metrics, type MetricsOptions, metricsPublish } from "./Metrics.ts"
export {
  prometheus,
  PROMETHEUS_CONTENT_TYPE,
  prometheusHandler,
  type PrometheusHandlerOptions,
  type PrometheusOptions,
  type PrometheusRuntime
} from "./Prometheus.ts"
export { formatTraceparent, parseTraceparent, tracing, tracingPublish } from "./Tracing.ts"
