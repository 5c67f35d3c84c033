/**
 * Connection metrics: a gauge of the broker connection's state and counters of its disconnects, reconnect attempts
 * and reconnects, fed by the transport's optional `connection` capability (its events where it reports them, else
 * its state changes). A transport without a connection (the memory one) records nothing.
 *
 * @module
 */
import { type ConnectionEvent, type ConnectionState, Transport } from "@cqbus/core"
import { Options } from "@cqbus/core/backend"
import { Effect, Layer, Metric, Stream } from "effect"
import { checkLagOptions } from "./internal/checks.ts"

/**
 * Options of `connectionMetrics` and `layerConnectionMetrics`.
 *
 * @since 0.1.0
 * @category models
 */
export interface ConnectionMetricsOptions {
  /** Attributes added to every series, e.g. `{ service: "search" }` (default none). */
  readonly attributes?: Readonly<Record<string, string>>
}

const STATES: ReadonlyArray<ConnectionState["status"]> = ["connected", "disconnected", "reconnecting", "closed"]

/** The state an event leaves the connection in. */
const stateAfter = (event: ConnectionEvent): ConnectionState["status"] => {
  switch (event._tag) {
    case "Connected":
    case "Reconnected":
      return "connected"
    case "Disconnected":
      return "disconnected"
    case "Reconnecting":
      return "reconnecting"
    case "Closed":
      return "closed"
  }
}

/**
 * Follows the transport's connection for as long as it reports one and records:
 * `messaging_client_connection_state` (gauge, one series per `state` — `connected`, `disconnected`, `reconnecting`,
 * `closed` — 1 for the current one, 0 for the others), `messaging_client_connection_disconnects_total`,
 * `messaging_client_connection_reconnect_attempts_total` and `messaging_client_connection_reconnects_total`
 * (counters of the events seen while it runs). Returns when the connection closes (its event stream ends), at once for
 * a transport without a connection. A transport whose capability reports no events still feeds the gauge from its
 * state changes; its counters stay at 0.
 *
 * Run it for the life of the service: `layerConnectionMetrics` does.
 *
 * @since 0.1.0
 * @category connection
 */
export const connectionMetrics = (options: ConnectionMetricsOptions = {}): Effect.Effect<void, never, Transport.Transport> => {
  Options.orThrow(checkLagOptions(options, "connectionMetrics"))
  const extra = options.attributes ?? {}
  const state = Metric.gauge("messaging_client_connection_state", {
    description: "1 for the state the connection to the broker is in (attribute state), 0 for the others."
  })
  const gauges = new Map(STATES.map((s) => [s, Metric.withAttributes(state, { ...extra, state: s })]))
  const counter = (name: string, description: string) =>
    Metric.counter(name, { description, incremental: true, attributes: { ...extra } })
  const disconnects = counter("messaging_client_connection_disconnects_total", "Times the connection to the broker was lost.")
  const attempts = counter(
    "messaging_client_connection_reconnect_attempts_total",
    "Attempts to reach a broker after the connection was lost."
  )
  const reconnects = counter("messaging_client_connection_reconnects_total", "Times the connection to the broker was restored.")
  const setState = (current: ConnectionState["status"]): Effect.Effect<void> =>
    Effect.forEach(STATES, (s) => Metric.update(gauges.get(s)!, s === current ? 1 : 0), { discard: true })
  const onEvent = (event: ConnectionEvent): Effect.Effect<void> => {
    const count = event._tag === "Disconnected"
      ? Metric.update(disconnects, 1)
      : event._tag === "Reconnecting"
      ? Metric.update(attempts, 1)
      : event._tag === "Reconnected"
      ? Metric.update(reconnects, 1)
      : Effect.void
    return Effect.andThen(count, setState(stateAfter(event)))
  }
  return Effect.flatMap(Effect.service(Transport.Transport), (transport) => {
    const connection = transport.connection
    if (connection === undefined) return Effect.void
    // The present state first, so the gauge is right before the first event (and for a stream that starts with none).
    const present = Effect.flatMap(connection.get, (now) => setState(now.status))
    return Effect.andThen(
      present,
      connection.events === undefined
        ? Stream.runForEach(connection.changes, (now) => setState(now.status))
        : Stream.runForEach(connection.events, onEvent)
    )
  })
}

/**
 * A layer that runs `connectionMetrics` for its lifetime.
 *
 * @example
 * ```ts
 * import { EventBus } from "@cqbus/core"
 * import { layerConnectionMetrics } from "@cqbus/metrics"
 * import { Layer } from "effect"
 *
 * const live = layerConnectionMetrics({ attributes: { service: "search" } }).pipe(Layer.provideMerge(EventBus.layerMemory()))
 * ```
 *
 * @since 0.1.0
 * @category connection
 */
export const layerConnectionMetrics = (options: ConnectionMetricsOptions = {}): Layer.Layer<never, never, Transport.Transport> => {
  Options.orThrow(checkLagOptions(options, "layerConnectionMetrics"))
  return Layer.effectDiscard(Effect.forkScoped(connectionMetrics(options)))
}
