/**
 * Tracing: W3C `traceparent` propagation through Effect spans, so one trace spans the publisher and every consumer.
 * `tracingPublish` opens a producer span and writes its `traceparent`; `tracing` opens a consumer span whose parent is
 * the span that header names.
 *
 * @module
 */
import type { Middleware, PublishMiddleware } from "@cqbus/core"
import { Effect, Tracer } from "effect"

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
