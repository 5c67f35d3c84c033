/**
 * The option checks the metrics, consumer lag and Prometheus modules share, so an option means the same and is
 * refused with the same message wherever it is accepted (docs/reliability.md, "Options").
 *
 * @module
 */
import { Options } from "@cqbus/core/backend"

/** Attribute values are label values: one line each. */
export const attributes = (option: string, value: unknown): Options.Check =>
  Options.record(option, value, (name, v) => Options.text(name, v, { maxLength: 1024 }))

/** `ConsumerLagOptions` of `consumerLag`, `layerConsumerLag` and `prometheusHandler`'s `consumerLag`; `ConnectionMetricsOptions` has the same shape. */
export const checkLagOptions = (options: unknown, prefix: string): Options.Check =>
  Options.fields(prefix, options, (o) => attributes(`${prefix}.attributes`, o.attributes))
