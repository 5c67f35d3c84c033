/**
 * `@cqbus/retry`: retries a failing handler in process, on an Effect `Schedule`, before the failure reaches the
 * transport. In-process retries are cheap and keep the message's position; when they are used up, the failure goes
 * to the transport's redelivery with backoff, which also survives a crash of this process. `Reject` and `RetryLater`
 * are never retried here: they are decisions about delivery, not transient failures.
 *
 * @module
 */
import { Backoff, type Middleware } from "@cqbus/core"
import { errorTag, Options } from "@cqbus/core/backend"
import { Duration, Effect, Random, Schedule } from "effect"

/**
 * Options of `retry`. The delays use core's backoff vocabulary (`Backoff.ExponentialOptions`: `initial`, `factor`,
 * `max`, `jitter`, with the meanings `Backoff.exponential` gives them); the defaults here are 3 retries, from 100 ms,
 * ×2, at most 10 s, with jitter 0.2 (each delay drawn from 80 % to 100 % of its nominal value).
 *
 * @since 0.1.0
 * @category models
 */
export interface RetryOptions extends Backoff.ExponentialOptions {
  /** Retries after the first run (default 3). */
  readonly times?: number
  /** Schedule no further retry once this much time has passed since the first failure. */
  readonly maxElapsed?: Duration.Input
  /** A schedule of your own instead of `initial`/`factor`/`max`/`jitter`; `times` and `maxElapsed` still bound it. */
  readonly schedule?: Schedule.Schedule<unknown, unknown>
  /** Retry only the errors this accepts (default: all but `Reject` and `RetryLater`). */
  readonly while?: (error: unknown) => boolean
}

/** `Reject` dead-letters and `RetryLater` asks the transport for a later redelivery: neither is retried here. */
const isDeliveryDecision = (error: unknown): boolean => {
  const tag = errorTag(error)
  return tag === "Reject" || tag === "RetryLater"
}

/** The accepted range of each option (docs/reliability.md, "Options"); the delays are checked as `Backoff`'s are. */
const checkOptions = (options: unknown): Options.Check =>
  Options.fields("retry", options, (o) =>
    Options.first(
      () => Options.integer("retry.times", o.times, { min: 0, max: 10_000 }),
      () => Backoff.checkExponential("retry", o),
      () => Options.duration("retry.maxElapsed", o.maxElapsed, Options.Ranges.delay),
      () =>
        o.schedule === undefined || Schedule.isSchedule(o.schedule)
          ? undefined
          : { option: "retry.schedule", message: `retry.schedule must be a Schedule, got ${Options.show(o.schedule)}` },
      () => Options.func("retry.while", o.while)
    )
  )

/**
 * The schedule `retry` runs on for these options. An option out of range throws a `ConfigError` naming it.
 *
 * @since 0.1.0
 * @category constructors
 */
export const retrySchedule = (options: RetryOptions = {}): Schedule.Schedule<unknown, unknown> => {
  Options.orThrow(checkOptions(options))
  const max = Duration.toMillis(options.max ?? "10 seconds")
  const jitter = options.jitter ?? 0.2
  // An Effect `Schedule` and `Random` rather than a `Backoff` function: the retries run inside the handler's fiber, so
  // a `TestClock` (and a seeded `Random`) controls them.
  const base: Schedule.Schedule<unknown, unknown> = options.schedule ?? Schedule.exponential(
    options.initial ?? "100 millis",
    options.factor ?? 2
  ).pipe(
    Schedule.modifyDelay((metadata) => {
      const delay = Math.min(Duration.toMillis(metadata.duration), max)
      return jitter === 0
        ? Effect.succeed(Duration.millis(delay))
        : Effect.map(Random.next, (random) => Duration.millis(delay * (1 - jitter * random)))
    })
  )
  return base.pipe(
    Schedule.upTo({
      times: options.times ?? 3,
      ...(options.maxElapsed === undefined ? {} : { duration: options.maxElapsed })
    })
  )
}

/**
 * Retries a failing handler in process. `retry({ times: 3, initial: "1 second" })` is CQC's `WithRetry` shape. An
 * option out of range (`times` 0 to 10,000, delays 0 to 1 day, `factor` 1 to 100, `jitter` 0 to 1) throws a
 * `ConfigError` naming it.
 *
 * @example
 * ```ts
 * import { Effect, pipe } from "effect"
 * import { retry } from "@cqbus/retry"
 * const handler = pipe((_: unknown) => Effect.void, retry({ times: 3, initial: "1 second" }))
 * ```
 *
 * @since 0.1.0
 * @category middleware
 */
export const retry = (options: RetryOptions = {}): Middleware => {
  const schedule = retrySchedule(options)
  const accept = options.while
  const shouldRetry = (error: unknown): boolean => !isDeliveryDecision(error) && (accept === undefined || accept(error))
  return (handler) => (event, delivery) => {
    const run = Effect.suspend(() => handler(event, delivery))
    // Most runs succeed, and need no schedule: the retry is only built once the first run has failed. That failure is
    // replayed as the retry's first attempt, so the schedule sees the same errors, and its delays and `maxElapsed`
    // count from the first failure, exactly as if the whole run had been retried.
    return Effect.catch(run, (error) => {
      if (!shouldRetry(error)) return Effect.fail(error)
      let replayed = false
      const again = Effect.suspend(() => {
        if (replayed) return run
        replayed = true
        return Effect.fail(error)
      })
      return Effect.retry(again, { schedule, while: shouldRetry })
    })
  }
}
