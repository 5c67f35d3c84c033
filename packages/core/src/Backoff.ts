/**
 * Redelivery backoff: the delay before a failed delivery is tried again, as a pure function of the attempt number.
 * It has to be a function of the attempt (not a stateful `Schedule`) because redelivery may happen in another process
 * after a crash, where only the broker's delivery count survives.
 *
 * @module
 */
import { Duration } from "effect"

/**
 * The delay before delivery `attempt + 1`, after delivery `attempt` (1-based) failed.
 *
 * @since 0.1.0
 * @category models
 */
export type Backoff = (attempt: number) => Duration.Duration

/**
 * Exponential backoff: `initial * factor^(attempt - 1)`, capped at `max`, with optional full jitter in
 * `[delay * (1 - jitter), delay]`.
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
  const base = Duration.toMillis(initial)
  const cap = Duration.toMillis(max)
  return (attempt) => {
    const delay = Math.min(cap, base * Math.pow(factor, Math.max(0, attempt - 1)))
    return Duration.millis(jitter > 0 ? delay * (1 - jitter * Math.random()) : delay)
  }
}

/**
 * The same delay after every failure.
 *
 * @since 0.1.0
 * @category constructors
 */
export const constant = (delay: Duration.Input): Backoff => {
  const fixed = Duration.fromInputUnsafe(delay)
  return () => fixed
}
