/**
 * The backlog-state port: each live consumer's backlog as a level (`normal`, `warning`, `critical`) and the changes
 * between levels, recoveries included. A monitor computes them (`BacklogMonitor.layer` in `@cqbus/metrics` polls the
 * transport's `consumers` capability against thresholds) and provides this service; readers such as the health
 * router's readiness depend on this tag only, so they need no import of the package that computes the states.
 *
 * @module
 */
import type { Effect, Stream } from "effect"
import { Context } from "effect"
import type { ConsumerLag } from "./Transport.ts"

/**
 * How far behind a consumer is: `normal` (below every warning threshold), `warning` (at or above one), `critical`
 * (at or above a critical one).
 *
 * @since 0.1.0
 * @category models
 */
export type BacklogLevel = "normal" | "warning" | "critical"

/**
 * One live consumer's level, with the reading it was computed from.
 *
 * @since 0.1.0
 * @category models
 */
export interface BacklogState {
  /** The backend's name for the consumer (`ConsumerLag.consumer`). */
  readonly consumer: string
  readonly topic: string
  readonly group: string | undefined
  readonly level: BacklogLevel
  /** Which thresholds the reading reached (`undefined` for `normal`). */
  readonly reason: string | undefined
  /** When the consumer entered this level (its first reading, for a consumer that has always been `normal`). */
  readonly since: Date
  /** The last reading. */
  readonly lag: ConsumerLag
}

/**
 * A consumer moved from one level to another. `recovered` marks a move to a lower level (`critical` → `warning`,
 * `warning` → `normal`, `critical` → `normal`); a consumer that goes away while above `normal` recovers to `normal`
 * with the reason saying so, so every raised level is followed by a recovery notice.
 *
 * @since 0.1.0
 * @category models
 */
export interface BacklogChange {
  readonly consumer: string
  readonly topic: string
  readonly group: string | undefined
  readonly from: BacklogLevel
  readonly to: BacklogLevel
  readonly recovered: boolean
  /** Why: the thresholds reached, or what brought it back. */
  readonly reason: string
  /** When the reading that caused the change was taken. */
  readonly at: Date
  /** That reading (the last one, for a consumer that went away). */
  readonly lag: ConsumerLag
}

/**
 * What a backlog monitor provides.
 *
 * @since 0.1.0
 * @category models
 */
export interface BacklogShape {
  /** Every live consumer's current state, as of the last reading. */
  readonly states: Effect.Effect<ReadonlyArray<BacklogState>>
  /** Level changes from the moment the stream is run, in the order they happened, for as long as the monitor lives. */
  readonly changes: Stream.Stream<BacklogChange>
}

// An explicitly typed key: JSR and `isolatedDeclarations` reject a call expression as a superclass (see Transport.ts).
const BacklogKey: Context.ServiceClass<Backlog, "@cqbus/core/Backlog", BacklogShape> = Context.Service<
  Backlog,
  BacklogShape
>()("@cqbus/core/Backlog")

/**
 * The `Backlog` service: consumer backlog levels and their changes. `BacklogMonitor.layer` (`@cqbus/metrics`) provides
 * it; the health router's readiness reads it with `backlog: { states: true }`.
 *
 * @example
 * ```ts
 * import { Backlog } from "@cqbus/core"
 * import { Effect, Stream } from "effect"
 *
 * const alerts = Effect.gen(function*() {
 *   const backlog = yield* Backlog.Backlog
 *   yield* Stream.runForEach(backlog.changes, (change) =>
 *     Effect.log(`${change.consumer}: ${change.from} -> ${change.to} (${change.reason})`))
 * })
 * ```
 *
 * @since 0.1.0
 * @category services
 */
export class Backlog extends BacklogKey {}
