// An HTTP service around a bus: `POST /assets` publishes a typed `AssetCreated` event, a subscriber ("indexer")
// handles it behind the full plugin stack (recovery, retry, logging, metrics), `GET /assets/:id` shows what it
// indexed, `/health` answers liveness and readiness and `/metrics` the Prometheus exposition with the consumer lag.
// It runs on the in-memory bus unless a bus layer is given (main.ts gives NATS when NATS_URL is set).
import { EventBus, type PublishMiddleware, type Transport } from "@cqbus/core"
import { healthRouter, Heartbeat } from "@cqbus/health"
import { logging, loggingPublish } from "@cqbus/logging"
import { metrics, metricsPublish, prometheusHandler } from "@cqbus/metrics"
import { recovery } from "@cqbus/recovery"
import { retry } from "@cqbus/retry"
import { AssetCreatedEvent } from "@cqbus/testkit/events"
import { Data, Effect, Layer, type LogLevel, ManagedRuntime, Metric, pipe, References } from "effect"
import { Hono } from "hono"

/** The bus and transport the service runs on: `EventBus.layerMemory(...)`, `NatsEventBus.layerConfig(...)`, ... */
export type BusLayer = Layer.Layer<EventBus.EventBus | Transport.Transport, unknown>

/** How the service is built: its bus (given the bus config the service needs) and its log level. */
export interface HttpServiceOptions {
  readonly bus?: (config: {
    readonly source: string
    readonly publishMiddleware: ReadonlyArray<PublishMiddleware>
  }) => BusLayer
  /** Effect's minimum log level for the service (default `"Info"`; `"None"` for quiet tests). */
  readonly logLevel?: LogLevel.LogLevel
}

/**
 * A service: the Hono app to serve, what the indexer has seen, `start` (builds the bus and subscribes; the first
 * request would do it too) and `dispose` (drains the subscription, then closes the bus).
 */
export interface HttpService {
  readonly app: Hono
  readonly indexed: ReadonlyMap<string, string>
  readonly start: () => Promise<void>
  readonly dispose: () => Promise<void>
}

/** The indexer's transient failure: a symbol that is "busy" the first time it is seen. */
class IndexBusy extends Data.TaggedError("IndexBusy")<{ readonly assetId: string }> {}

const SOURCE = "http-service"

// Publish side: logging inside, metrics outermost (it times the whole publish).
const publishStack = (): ReadonlyArray<PublishMiddleware> => [loggingPublish(), metricsPublish()]

/** Builds the service; nothing listens yet (main.ts serves `app`, tests call `app.request`). */
export const makeHttpService = (options: HttpServiceOptions = {}): HttpService => {
  const indexed = new Map<string, string>()
  const busy = new Set<string>()
  // The handler: `BUSY…` symbols fail once (retried in process by `retry`), `CRASH` throws (a defect, which
  // `recovery` turns into a typed `HandlerDefect`, so `retry` and the dead letters see it).
  const index = (event: { readonly assetId: string; readonly symbol: string }) =>
    Effect.suspend(() => {
      if (event.symbol === "CRASH") throw new Error(`cannot index ${event.assetId}`)
      if (event.symbol.startsWith("BUSY") && !busy.has(event.assetId)) {
        busy.add(event.assetId)
        return Effect.fail(new IndexBusy({ assetId: event.assetId }))
      }
      return Effect.sync(() => void indexed.set(event.assetId, event.symbol))
    })
  // The full stack, innermost first: recovery → retry → logging → metrics (pipe's last entry runs outermost).
  const handler = pipe(
    index,
    recovery(),
    retry({ times: 3, initial: "20 millis" }),
    logging({ levels: { success: "Debug" } }),
    metrics()
  )
  const indexer = Layer.effectDiscard(Effect.flatMap(Effect.service(EventBus.EventBus), (bus) =>
    bus.subscribe(AssetCreatedEvent, handler, { group: "indexer", concurrency: 8, maxDeliver: 3 })))

  const config = { source: SOURCE, publishMiddleware: publishStack() }
  const bus = options.bus?.(config) ?? EventBus.layerMemory(config)
  const layer = Layer.mergeAll(indexer, Heartbeat.layer()).pipe(
    Layer.provideMerge(bus),
    // One metric registry per service instance (the global one otherwise), so two instances in a test do not mix.
    Layer.provideMerge(Layer.succeed(Metric.MetricRegistry, new Map())),
    Layer.provideMerge(Layer.succeed(References.MinimumLogLevel, options.logLevel ?? "Info"))
  )
  const runtime = ManagedRuntime.make(layer)
  const scrape = prometheusHandler({ runtime })

  const app = new Hono()
    .route("/health", healthRouter({ runtime, service: { serviceId: SOURCE, description: "cqbus HTTP example" } }))
    .get("/metrics", (c) => scrape(c.req.raw))
    .post("/assets", async (c) => {
      const body: { readonly assetId?: unknown; readonly symbol?: unknown } = await c.req.json().catch(() => ({}))
      const { assetId, symbol } = body
      if (typeof assetId !== "string" || typeof symbol !== "string") {
        return c.json({ error: "expected {\"assetId\": string, \"symbol\": string}" }, 400)
      }
      const ack = await runtime.runPromise(Effect.flatMap(Effect.service(EventBus.EventBus), (bus) =>
        bus.publish(AssetCreatedEvent, { assetId, symbol })))
      return c.json({ topic: ack.topic, sequence: ack.sequence }, 202)
    })
    .get("/assets/:id", (c) => {
      const symbol = indexed.get(c.req.param("id"))
      return symbol === undefined ? c.json({ error: "not indexed (yet)" }, 404) : c.json({ assetId: c.req.param("id"), symbol })
    })

  return { app, indexed, start: () => runtime.runPromise(Effect.void), dispose: () => runtime.dispose() }
}
