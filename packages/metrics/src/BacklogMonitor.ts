/**
 * Backlog states: the transport's consumer lag (its `consumers` capability) read on an interval and turned into a
 * level per consumer — `normal`, `warning`, `critical` — by thresholds on the messages waiting for it (`pending`) and
 * on the age of its oldest unacknowledged delivery (`oldestUnackedAge`). Each change of level, recoveries included, is
 * published on a `Stream` and logged; the states are provided as core's `Backlog` service, which the health router's
 * readiness reads without importing this package.
 *
 * @module
 */
import { Backlog, type BacklogChange, type BacklogLevel, type BacklogState, type ConfigError, type ConsumerLag, Transport } from "@cqbus/core"
import { Options } from "@cqbus/core/backend"
import { Duration, Effect, Layer, PubSub, Result, type Scope, Stream } from "effect"

/**
 * The thresholds of one level: a consumer reaches the level when either is reached (at or above).
 *
 * @since 0.1.0
 * @category models
 */
export interface BacklogThresholds {
  /** Messages stored for the consumer and not yet delivered to it (`ConsumerLag.pending`). */
  readonly pending?: number
  /**
   * The age of the consumer's oldest unacknowledged delivery (`ConsumerLag.oldestUnackedAge`: its longest-running
   * handler). Ignored for a backend that does not report it.
   */
  readonly age?: Duration.Input
}

/**
 * Options of `BacklogMonitor.make` and `BacklogMonitor.layer`. A threshold left out keeps its default; `critical`
 * must not be below `warning`.
 *
 * @since 0.1.0
 * @category models
 */
export interface BacklogMonitorOptions {
  /** How often the lag is read (default 10 seconds; 100 ms to 1 day). */
  readonly interval?: Duration.Input
  /** Default `{ pending: 10_000, age: "1 minute" }`. */
  readonly warning?: BacklogThresholds
  /** Default `{ pending: 100_000, age: "5 minutes" }`. */
  readonly critical?: BacklogThresholds
}

interface Thresholds {
  readonly pending: number
  readonly age: Duration.Duration
}

const DEFAULTS: { readonly warning: Thresholds; readonly critical: Thresholds } = {
  warning: { pending: 10_000, age: Duration.minutes(1) },
  critical: { pending: 100_000, age: Duration.minutes(5) }
}

const RANK: Record<BacklogLevel, number> = { normal: 0, warning: 1, critical: 2 }

const levelOptions = (option: string, value: unknown): Options.Check =>
  Options.fields(option, value, (o) =>
    Options.first(
      () => Options.integer(`${option}.pending`, o.pending, { min: 1, max: Options.MAX_COUNT }),
      () => Options.duration(`${option}.age`, o.age, { min: "1 millis", max: "30 days" })
    ))

/** The accepted range of each option, and `critical` at or above `warning` once the defaults are filled in. */
const checkOptions = (options: unknown): Options.Check =>
  Options.fields("BacklogMonitor", options, (o) =>
    Options.first(
      () => Options.duration("BacklogMonitor.interval", o.interval, { min: "100 millis", max: "1 days" }),
      () => levelOptions("BacklogMonitor.warning", o.warning),
      () => levelOptions("BacklogMonitor.critical", o.critical),
      () => {
        const { critical, warning } = resolve(o as BacklogMonitorOptions)
        const given = (level: "warning" | "critical", field: "pending" | "age") =>
          (o as BacklogMonitorOptions)[level]?.[field] === undefined ? " (the default)" : ""
        if (critical.pending < warning.pending) {
          return {
            option: "BacklogMonitor.critical.pending",
            message: `BacklogMonitor.critical.pending${given("critical", "pending")} must be at least ` +
              `BacklogMonitor.warning.pending${given("warning", "pending")}: ${critical.pending} < ${warning.pending}`
          }
        }
        if (Duration.isLessThan(critical.age, warning.age)) {
          return {
            option: "BacklogMonitor.critical.age",
            message: `BacklogMonitor.critical.age${given("critical", "age")} must be at least ` +
              `BacklogMonitor.warning.age${given("warning", "age")}: ${Duration.format(critical.age)} < ` +
              Duration.format(warning.age)
          }
        }
        return undefined
      }
    ))

/** The thresholds in force: the given ones over the defaults (the options are checked before this runs). */
const resolve = (options: BacklogMonitorOptions): { readonly warning: Thresholds; readonly critical: Thresholds } => {
  const of = (given: BacklogThresholds | undefined, fallback: Thresholds): Thresholds => ({
    pending: given?.pending ?? fallback.pending,
    age: given?.age === undefined ? fallback.age : Duration.fromInputUnsafe(given.age)
  })
  return { warning: of(options.warning, DEFAULTS.warning), critical: of(options.critical, DEFAULTS.critical) }
}

/** What one reading reached at a level's thresholds, in words; `undefined` when it reached none. */
const reached = (lag: ConsumerLag, level: "warning" | "critical", thresholds: Thresholds): string | undefined => {
  const parts: Array<string> = []
  if (lag.pending >= thresholds.pending) parts.push(`${lag.pending} messages pending (${level} at ${thresholds.pending})`)
  const age = lag.oldestUnackedAge
  if (age !== undefined && Duration.isGreaterThanOrEqualTo(age, thresholds.age)) {
    parts.push(`oldest unacknowledged delivery ${Duration.format(age)} old (${level} at ${Duration.format(thresholds.age)})`)
  }
  return parts.length === 0 ? undefined : parts.join(", ")
}

/** The reading in words, for a recovery to `normal`. */
const describe = (lag: ConsumerLag): string =>
  `${lag.pending} messages pending` +
  (lag.oldestUnackedAge === undefined ? "" : `, oldest unacknowledged delivery ${Duration.format(lag.oldestUnackedAge)} old`)

/**
 * Starts a monitor for the scope's lifetime: reads the lag once now and then every `interval`, and returns the states
 * and the stream of changes. A consumer appears at `normal` (a change is published only when its first reading is
 * above it); one that goes away while above `normal` recovers to `normal`. A reading the transport cannot give (its
 * `HealthError`) is skipped and the states stay as they were; a transport without the `consumers` capability has no
 * states. Fails with `ConfigError` when an option is out of range or `critical` is below `warning`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: BacklogMonitorOptions = {}
): Effect.Effect<Backlog.BacklogShape, ConfigError, Transport.Transport | Scope.Scope> =>
  Effect.gen(function*() {
    const invalid = checkOptions(options)
    if (invalid !== undefined) return yield* Options.toConfigError(invalid)
    const { critical, warning } = resolve(options)
    const interval = Duration.fromInputUnsafe(options.interval ?? "10 seconds")
    const transport = yield* Transport.Transport
    const clock = yield* Effect.clockWith(Effect.succeed)
    const pubsub = yield* PubSub.unbounded<BacklogChange>()
    yield* Effect.addFinalizer(() => PubSub.shutdown(pubsub))
    /** By consumer name, in the order consumers were first seen. */
    const states = new Map<string, BacklogState>()

    const classify = (lag: ConsumerLag): readonly [BacklogLevel, string | undefined] => {
      const high = reached(lag, "critical", critical)
      if (high !== undefined) return ["critical", high]
      const raised = reached(lag, "warning", warning)
      return raised === undefined ? ["normal", undefined] : ["warning", raised]
    }

    const record = (lags: ReadonlyArray<ConsumerLag>): ReadonlyArray<BacklogChange> => {
      const at = new Date(clock.currentTimeMillisUnsafe())
      const changes: Array<BacklogChange> = []
      const seen = new Set<string>()
      for (const lag of lags) {
        seen.add(lag.consumer)
        const [level, reason] = classify(lag)
        const prior = states.get(lag.consumer)
        const from = prior?.level ?? "normal"
        const since = prior === undefined || prior.level !== level ? at : prior.since
        states.set(lag.consumer, { consumer: lag.consumer, topic: lag.topic, group: lag.group, level, reason, since, lag })
        if (level !== from) {
          changes.push({
            consumer: lag.consumer,
            topic: lag.topic,
            group: lag.group,
            from,
            to: level,
            recovered: RANK[level] < RANK[from],
            reason: reason ?? `back below every warning threshold: ${describe(lag)}`,
            at,
            lag
          })
        }
      }
      for (const [name, state] of states) {
        if (seen.has(name)) continue
        states.delete(name)
        // Every raised level gets its recovery notice, also when the consumer is gone (unsubscribed, shut down).
        if (state.level !== "normal") {
          changes.push({
            consumer: name,
            topic: state.topic,
            group: state.group,
            from: state.level,
            to: "normal",
            recovered: true,
            reason: "the consumer is gone (its subscription ended)",
            at,
            lag: state.lag
          })
        }
      }
      return changes
    }

    const announce = (change: BacklogChange): Effect.Effect<void> => {
      const text = `cqbus: backlog of ${change.consumer} on ${change.topic}: ${change.from} -> ${change.to}: ${change.reason}`
      // A rising backlog is worth a warning line without any plugin (failures are visible by default); a recovery is
      // news, not a concern.
      return Effect.andThen(
        change.recovered ? Effect.logInfo(text) : Effect.logWarning(text),
        PubSub.publish(pubsub, change)
      )
    }

    const consumers = transport.consumers
    const poll: Effect.Effect<void> = consumers === undefined ? Effect.void : Effect.flatMap(
      Effect.result(consumers),
      (read) =>
        Result.isFailure(read)
          ? Effect.logDebug(`cqbus: backlog monitor cannot read the consumers: ${read.failure.message}`)
          : Effect.forEach(record(read.success), announce, { discard: true })
    )

    yield* poll
    if (consumers !== undefined) yield* Effect.forkScoped(Effect.forever(Effect.andThen(Effect.sleep(interval), poll)))
    return {
      states: Effect.sync(() => Array.from(states.values())),
      changes: Stream.fromPubSub(pubsub)
    }
  })

/**
 * The monitor as a layer providing core's `Backlog` service: `make` for the layer's lifetime.
 *
 * @example
 * ```ts
 * import { EventBus } from "@cqbus/core"
 * import { BacklogMonitor } from "@cqbus/metrics"
 * import { Effect, Layer, Stream } from "effect"
 *
 * const layer = BacklogMonitor.layer({
 *   interval: "5 seconds",
 *   warning: { pending: 1_000, age: "30 seconds" },
 *   critical: { pending: 10_000, age: "2 minutes" }
 * }).pipe(Layer.provideMerge(EventBus.layerMemory()))
 *
 * const alerts = Stream.runForEach(BacklogMonitor.changes, (change) =>
 *   Effect.log(`${change.consumer}: ${change.from} -> ${change.to}${change.recovered ? " (recovered)" : ""}`))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: BacklogMonitorOptions = {}
): Layer.Layer<Backlog.Backlog, ConfigError, Transport.Transport> => Layer.effect(Backlog.Backlog, make(options))

/**
 * The level changes of the monitor in the context, from the moment the stream is run.
 *
 * @since 0.1.0
 * @category accessors
 */
export const changes: Stream.Stream<BacklogChange, never, Backlog.Backlog> = Stream.unwrap(
  Effect.map(Effect.service(Backlog.Backlog), (backlog) => backlog.changes)
)

/**
 * Every live consumer's current state in the monitor in the context.
 *
 * @since 0.1.0
 * @category accessors
 */
export const states: Effect.Effect<ReadonlyArray<BacklogState>, never, Backlog.Backlog> = Effect.flatMap(
  Effect.service(Backlog.Backlog),
  (backlog) => backlog.states
)
