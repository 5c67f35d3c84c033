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
 * How a delay grows from one failure to the next, in the one vocabulary of cqbus: `Backoff.exponential` (redelivery
 * by the transport) and `retry` of `@cqbus/retry` (in-process retries) take these options with the same meanings;
 * only their defaults differ.
 *
 * @since 0.1.0
 * @category models
 */
export interface ExponentialOptions {
  /** The first delay (0 to 1 day). */
  readonly initial?: Duration.Input
  /** Growth of the delay per failure (1 to 100; 1 gives a constant delay). */
  readonly factor?: number
  /** The longest delay (0 to 1 day); jitter only shortens a delay, so no delay exceeds it. */
  readonly max?: Duration.Input
  /**
   * The fraction (0 to 1) by which each delay is shortened at random: it is drawn from `[delay × (1 − jitter),
   * delay]`, so consumers that failed together do not retry together. 0 is no jitter.
   */
  readonly jitter?: number
}

/**
 * The check of `ExponentialOptions` that both `Backoff.exponential` and `retry` run, naming a bad option
 * `<prefix>.<name>` (`backoff.jitter`, `retry.max`) with its range.
 *
 * @since 0.1.0
 * @category checks
 */
export const checkExponential = (prefix: string, options: ExponentialOptions): Options.Check =>
  Options.first(
    () => Options.duration(`${prefix}.initial`, options.initial, Options.Ranges.delay),
    () => Options.number(`${prefix}.factor`, options.factor, { min: 1, max: 100 }),
    () => Options.duration(`${prefix}.max`, options.max, Options.Ranges.delay),
    () => Options.number(`${prefix}.jitter`, options.jitter, { min: 0, max: 1 })
  )

/**
 * Exponential backoff: `initial * factor^(attempt - 1)`, capped at `max`, shortened by `jitter` (see
 * `ExponentialOptions`). Defaults: 200 ms, ×2, at most 1 minute, no jitter. An option out of range throws a
 * `ConfigError` here, where the backoff is written.
 *
 * @since 0.1.0
 * @category constructors
 */
export const exponential = (options: ExponentialOptions = {}): Backoff => {
  Options.orThrow(checkExponential("backoff", options))
  const { factor = 2, initial = "200 millis", jitter = 0, max = "1 minute" } = options
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
