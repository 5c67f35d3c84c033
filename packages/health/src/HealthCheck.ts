/**
 * What a health check is and what it reports: the check objects of `application/health+json`
 * (draft-inadarei-api-health-check), shared by the built-in checks, the checks users write and the router that
 * answers with them.
 *
 * @module
 */
import type { Duration, Effect } from "effect"

/**
 * A health status: `pass` (healthy), `warn` (healthy, with a concern), `fail` (unhealthy: the endpoint answers 503).
 *
 * @since 0.1.0
 * @category models
 */
export type HealthStatus = "pass" | "warn" | "fail"

/**
 * What one check observed: the fields a check object of `application/health+json` carries besides `time`. `status`
 * defaults to `pass`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Observation {
  readonly status?: HealthStatus
  readonly componentId?: string
  readonly componentType?: string
  readonly observedValue?: string | number | boolean
  readonly observedUnit?: string
  /** Why the status is not `pass` (left out for `pass`, as the draft recommends). */
  readonly output?: string
}

/**
 * One check object of a health response.
 *
 * @since 0.1.0
 * @category models
 */
export interface CheckResult extends Observation {
  readonly status: HealthStatus
  /** When it was observed (ISO 8601, on Effect's `Clock`). */
  readonly time: string
}

/**
 * A check of your own: an Effect that observes something. Its failure or defect reports `fail` with the error's
 * message as `output`; a check that outlives its timeout reports `fail` too.
 *
 * @example
 * ```ts
 * import type { HealthCheck } from "@cqbus/health"
 * import { Effect } from "effect"
 *
 * const disk: HealthCheck = {
 *   name: "disk:utilization",
 *   run: Effect.succeed({ observedValue: 41, observedUnit: "percent" })
 * }
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export interface HealthCheck<R = never> {
  /** The key in `checks`: `component:measurement` (`"postgres:responseTime"`) or a bare measurement (`"uptime"`). */
  readonly name: string
  /** What it observed: nothing (a pass), one observation, or one per component instance. */
  readonly run: Effect.Effect<Observation | ReadonlyArray<Observation> | void, unknown, R>
  /** Part of `/ready` as well as the full report (default `true`). */
  readonly ready?: boolean
  /** Overrides the router's `timeout` for this check. */
  readonly timeout?: Duration.Input
}
