/**
 * Redelivery backoff: the delay before a failed delivery is tried again, as a pure function of the attempt number.
 * It has to be a function of the attempt (not a stateful `Schedule`) because redelivery may happen in another process
 * after a crash, where only the broker's delivery count survives.
 *
 * @module
 */
import { Duration } from "effect"
import * as Options from "./Options.ts"

/**
 * The delay before delivery `attempt + 1`, after delivery `attempt` (1-based) failed.
 *
 * @since 0.1.0
 * @category models
 */
export type Backoff = (attempt: number) => Duration.Duration

/**
 * Exponential backoff: `initial * factor^(attempt - 1)`, capped at `max`, with optional full jitter in
 * `[delay * (1 - jitter), delay]`. `initial` and `max` from 0 to 1 day, `factor` from 1 to 100, `jitter` from 0 to 1;
 * anything else throws a `ConfigError` here, where the backoff is written.
 *
 * @since 0.1.0
 * @category constructors
 */
export const exponential = (
  { factor = 2, initial = "200 millis", jitter = 0, max = "1 minute" }: {
    readonly initial?: Duration.Input
    readonly factor?: number
    readonly max?: Duration.Input
    readonly jitter?: number
  } = {}
): Backoff => {
  Options.orThrow(Options.first(
    () => Options.duration("backoff.initial", initial, Options.Ranges.delay),
    () => Options.number("backoff.factor", factor, { min: 1, max: 100 }),
    () => Options.duration("backoff.max", max, Options.Ranges.delay),
    () => Options.number("backoff.jitter", jitter, { min: 0, max: 1 })
  ))
  const base = Duration.toMillis(initial)
  const cap = Duration.toMillis(max)
  return (attempt) => {
    const delay = Math.min(cap, base * Math.pow(factor, Math.max(0, attempt - 1)))
    return Duration.millis(jitter > 0 ? delay * (1 - jitter * Math.random()) : delay)
  }
}

/**
 * The same delay after every failure (0 to 1 day; anything else throws a `ConfigError`).
 *
 * @since 0.1.0
 * @category constructors
 */
export const constant = (delay: Duration.Input): Backoff => {
  Options.orThrow(Options.duration("backoff.delay", delay, Options.Ranges.delay))
  const fixed = Duration.fromInputUnsafe(delay)
  return () => fixed
}
