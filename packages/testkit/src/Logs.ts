/**
 * Recording what a program logs, for tests that assert on log lines (the bus's default failure warnings, the logging
 * and recovery plugins): every line with its level, text, annotations and cause.
 *
 * @module
 */
import { type Cause, Effect, Logger, References } from "effect"

/**
 * One recorded log line.
 *
 * @since 0.1.0
 * @category models
 */
export interface LogLine {
  /** `"Warn"`, `"Info"`, ... */
  readonly level: string
  /** The message, its parts joined with spaces. */
  readonly message: string
  /** The log annotations in effect when the line was written. */
  readonly annotations: Record<string, unknown>
  readonly cause: Cause.Cause<unknown>
}

/**
 * The log lines recorded so far, and `provide`, which installs the recording logger around a program at minimum
 * level `All` (or `minimum`).
 *
 * @since 0.1.0
 * @category models
 */
export interface CapturedLogs {
  readonly lines: Array<LogLine>
  readonly provide: <A, E, R>(effect: Effect.Effect<A, E, R>, minimum?: "All" | "Info") => Effect.Effect<A, E, R>
}

/**
 * A logger that records every line, and a way to install it around a program.
 *
 * @example
 * ```ts
 * import { captureLogs } from "@cqbus/testkit"
 * import { Effect } from "effect"
 *
 * const { lines, provide } = captureLogs()
 * await Effect.runPromise(provide(Effect.logWarning("careful")))
 * // lines[0]: { level: "Warn", message: "careful", ... }
 * ```
 *
 * @since 0.1.0
 * @category logging
 */
export const captureLogs = (): CapturedLogs => {
  const lines: Array<LogLine> = []
  const logger = Logger.make(({ cause, fiber, logLevel, message }) => {
    lines.push({
      level: logLevel,
      message: Array.isArray(message) ? message.map(String).join(" ") : String(message),
      annotations: { ...fiber.getRef(References.CurrentLogAnnotations) },
      cause
    })
  })
  return {
    lines,
    provide: (effect, minimum = "All") =>
      effect.pipe(Effect.provideService(References.MinimumLogLevel, minimum), Effect.provide(Logger.layer([logger])))
  }
}
