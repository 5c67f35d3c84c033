/**
 * The router's built-in checks, read from the bus and the optional capabilities of its `Transport`: the bus `check`
 * (timed), the connection, draining, each consumer's backlog, and the heartbeat. A transport without a capability
 * yields no entry for it, so the report only shows what the backend can answer.
 *
 * @module
 */
import { Backlog, type BacklogLevel, EventBus, Transport } from "@cqbus/core"
import { errorMessage } from "@cqbus/core/backend"
import { Cause, type Duration, Effect, Exit, Option, Result } from "effect"
import type { HealthStatus, Observation } from "../HealthCheck.ts"
import { Heartbeat } from "../Heartbeat.ts"

/** Milliseconds with microsecond precision: what `observedValue` of a response time shows. */
const millisSince = (startNanos: bigint, endNanos: bigint): number => Math.round(Number(endNanos - startNanos) / 1e3) / 1e3

/** The message of a check's failure, defect or interruption. */
export const causeMessage = (cause: Cause.Cause<unknown>): string => {
  const failure = Cause.findError(cause)
  if (Result.isSuccess(failure)) return errorMessage(failure.success)
  const defect = Cause.findDefect(cause)
  if (Result.isSuccess(defect)) return `defect: ${errorMessage(defect.success)}`
  return "interrupted"
}

/** A check as the router runs it: the user's `HealthCheck` with its defaults applied, or a built-in one. */
export interface NamedCheck<R> {
  readonly name: string
  readonly ready: boolean
  readonly timeout: Duration.Duration | undefined
  readonly run: Effect.Effect<Observation | ReadonlyArray<Observation> | void, unknown, R>
}

/** A built-in check: under the router's timeout, and part of `/ready` unless `ready` says otherwise. */
const builtIn = <R>(name: string, run: NamedCheck<R>["run"], ready = true): NamedCheck<R> => ({
  name,
  ready,
  timeout: undefined,
  run
})

/** The bus's own probe, timed. */
export const busCheck: NamedCheck<EventBus.EventBus | Transport.Transport> = builtIn(
  "bus:responseTime",
  Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const transport = yield* Transport.Transport
    const clock = yield* Effect.clockWith(Effect.succeed)
    const started = clock.monotonicTimeNanosUnsafe()
    const exit = yield* Effect.exit(bus.check)
    const took = millisSince(started, clock.monotonicTimeNanosUnsafe())
    const base = { componentId: transport.name, componentType: "component", observedValue: took, observedUnit: "ms" }
    return Exit.isSuccess(exit) ? base : { ...base, status: "fail" as const, output: causeMessage(exit.cause) }
  })
)

/** The connection to the broker, where the transport has one. */
export const connectionCheck: NamedCheck<Transport.Transport> = builtIn(
  "bus:connection",
  Effect.gen(function*() {
    const transport = yield* Transport.Transport
    if (transport.connection === undefined) return []
    const state = yield* transport.connection.get
    const observation: Observation = {
      componentId: state.server ?? transport.name,
      componentType: "datastore",
      observedValue: state.status
    }
    if (state.status === "connected") return observation
    return {
      ...observation,
      status: "fail",
      output: `${state.status} (${state.reconnects} reconnects so far)${state.lastError === undefined ? "" : `: ${state.lastError}`}`
    }
  })
)

/** Fails while the transport shuts down or a group subscription drains, so traffic moves elsewhere first. */
export const drainingCheck: NamedCheck<Transport.Transport> = builtIn(
  "bus:draining",
  Effect.gen(function*() {
    const transport = yield* Transport.Transport
    if (transport.draining === undefined) return []
    const draining = yield* transport.draining
    return draining
      ? { observedValue: true, status: "fail", output: "shutting down: subscriptions are draining" }
      : { observedValue: false }
  })
)

/** One observation per live consumer, by its backlog of undelivered messages. */
export const backlogCheck = (thresholds: { readonly warn: number; readonly fail: number }): NamedCheck<Transport.Transport> =>
  builtIn(
    "consumers:backlog",
    Effect.gen(function*() {
      const transport = yield* Transport.Transport
      if (transport.consumers === undefined) return []
      const lags = yield* Effect.result(transport.consumers)
      // The backlog cannot be read (the broker does not answer): a concern, not a verdict; the bus checks decide
      // whether the bus itself is down.
      if (Result.isFailure(lags)) {
        return { status: "warn", output: `cannot read the consumers: ${lags.failure.message}` }
      }
      return lags.success.map((lag): Observation => {
        const status: HealthStatus = lag.pending >= thresholds.fail
          ? "fail"
          : lag.pending >= thresholds.warn
          ? "warn"
          : "pass"
        const observation: Observation = {
          componentId: lag.consumer,
          componentType: "consumer",
          observedValue: lag.pending,
          observedUnit: "messages"
        }
        return status === "pass" ? observation : {
          ...observation,
          status,
          output: `${lag.pending} messages on ${lag.topic} not yet delivered (${lag.ackPending} awaiting ack, ` +
            `${lag.redelivered} redelivered); ${status} at ${status === "fail" ? thresholds.fail : thresholds.warn}`
        }
      })
    })
  )

const STATUS_OF: Record<BacklogLevel, HealthStatus> = { normal: "pass", warning: "warn", critical: "fail" }

/**
 * One observation per consumer from the backlog monitor's states (`Backlog` service): `warning` warns, `critical`
 * fails. Without a monitor in the runtime the option was set for nothing: a warning says so.
 */
export const backlogStatesCheck: NamedCheck<never> = builtIn(
  "consumers:backlog",
  Effect.flatMap(Effect.serviceOption(Backlog.Backlog), (backlog): Effect.Effect<Observation | ReadonlyArray<Observation>> =>
    Option.isNone(backlog)
      ? Effect.succeed({
        status: "warn",
        output: "backlog.states is set but the runtime provides no Backlog service (add BacklogMonitor.layer from @cqbus/metrics)"
      })
      : Effect.map(backlog.value.states, (states) =>
        states.map((state): Observation => {
          const observation: Observation = {
            componentId: state.consumer,
            componentType: "consumer",
            observedValue: state.lag.pending,
            observedUnit: "messages"
          }
          return state.level === "normal" ? observation : {
            ...observation,
            status: STATUS_OF[state.level],
            output: `${state.level} since ${state.since.toISOString()}: ${state.reason ?? ""}`
          }
        })))
)

/** The heartbeat's round trip, when the runtime provides `Heartbeat` (no entry otherwise). */
export const heartbeatCheck = (ready: boolean): NamedCheck<never> =>
  builtIn(
    "heartbeat:responseTime",
    Effect.flatMap(Effect.serviceOption(Heartbeat), (heartbeat): Effect.Effect<Observation | [], unknown> =>
      Option.isNone(heartbeat)
        ? Effect.succeed([])
        : Effect.map(heartbeat.value.probe, (ms): Observation => ({
          componentId: heartbeat.value.topic,
          componentType: "component",
          observedValue: Math.round(ms * 1000) / 1000,
          observedUnit: "ms"
        }))),
    ready
  )
