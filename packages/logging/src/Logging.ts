/**
 * The logging plugin: structured lines through the Effect `Logger` for every delivery (`logging`, a handler
 * middleware) and every publish (`loggingPublish`, a publish middleware), each outcome at a level that can be changed
 * or silenced. What a line carries is built only when it is written, since most deliveries log below the minimum level.
 *
 * @module
 */
import {
  type Delivery,
  type Middleware,
  type PublishAck,
  type PublishError,
  type PublishMiddleware,
  Verdict
} from "@cqbus/core"
import { errorMessage, errorTag, Options, type OutgoingMessage } from "@cqbus/core/backend"
import { Cause, Effect, Exit, LogLevel, References, Result } from "effect"
import {
  addHeaders,
  allowedHeaders,
  type Annotations,
  copyOf,
  describePayload,
  headerValue,
  millisSince
} from "./internal/format.ts"

/**
 * A level to log an outcome at, or `"None"` to log nothing for it.
 *
 * @since 0.1.0
 * @category models
 */
export type LoggingLevel = LogLevel.Severity | "None"

/**
 * The level of each outcome of a delivery. Defaults: `start` Debug, `success` Info, `failure` Warn, `reject` Warn,
 * `deadLetter` Error, `defect` Error, `interrupt` Info.
 *
 * @since 0.1.0
 * @category models
 */
export interface LoggingLevels {
  /** `"delivery start"`: the handler is about to run (default Debug). */
  readonly start?: LoggingLevel
  /** `"delivery handled"`: the handler succeeded and the message will be acked (default Info). */
  readonly success?: LoggingLevel
  /** `"delivery failed"`: a typed failure other than `Reject`; the message will be redelivered (default Warn). */
  readonly failure?: LoggingLevel
  /** `"delivery dead-lettered"` for a handler that failed with `Reject` (default Warn). */
  readonly reject?: LoggingLevel
  /**
   * `"delivery dead-lettered"` for a failure, defect or interruption on the last allowed attempt
   * (`attempt >= maxDeliver`): the message is moved to the dead letters (default Error).
   */
  readonly deadLetter?: LoggingLevel
  /**
   * `"delivery defect"`: the handler died (a thrown exception, `Effect.die`) and the message will be redelivered;
   * logged with its cause (default Error).
   */
  readonly defect?: LoggingLevel
  /**
   * `"delivery interrupted"`: the handler was interrupted, e.g. by a drain (the message is handed back) or from inside
   * (it is redelivered) (default Info).
   */
  readonly interrupt?: LoggingLevel
}

/**
 * Options of `logging`.
 *
 * @since 0.1.0
 * @category models
 */
export interface LoggingOptions {
  /** The level of each outcome; `"None"` silences one. */
  readonly levels?: LoggingLevels
  /**
   * Add the decoded event to the plugin's lines as `cqbus.payload` (default false: events often hold personal or
   * business data that does not belong in logs).
   */
  readonly logPayload?: boolean
  /**
   * What to log for the event when `logPayload` is true (default: JSON, with bigints as strings and bytes as base64;
   * `String(event)` when that fails).
   */
  readonly describe?: (event: unknown) => unknown
  /**
   * Header names (case-insensitive) to log as `cqbus.header.<name>` (default none). Credential-like names
   * (`authorization`, cookies, tokens, secrets, passwords, API keys, signatures, sessions) are never logged, even when
   * listed.
   */
  readonly headers?: ReadonlyArray<string>
}

/**
 * The level of each outcome of a publish. Defaults: `success` Debug, `failure` Warn, `defect` Error.
 *
 * @since 0.1.0
 * @category models
 */
export interface LoggingPublishLevels {
  /** `"published"`: the backend stored the message, or dropped it as a duplicate (default Debug). */
  readonly success?: LoggingLevel
  /** `"publish failed"`: a `PublishError`, with its reason and whether a retry may succeed (default Warn). */
  readonly failure?: LoggingLevel
  /** `"publish defect"`: the transport died; logged with its cause (default Error). */
  readonly defect?: LoggingLevel
}

/**
 * Options of `loggingPublish`.
 *
 * @since 0.1.0
 * @category models
 */
export interface LoggingPublishOptions {
  /** The level of each outcome; `"None"` silences one. */
  readonly levels?: LoggingPublishLevels
  /** Header names to log as `cqbus.header.<name>`; credential-like names never are (see `LoggingOptions.headers`). */
  readonly headers?: ReadonlyArray<string>
}

const DELIVERY_LEVELS: Required<LoggingLevels> = {
  start: "Debug",
  success: "Info",
  failure: "Warn",
  reject: "Warn",
  deadLetter: "Error",
  defect: "Error",
  interrupt: "Info"
}

const PUBLISH_LEVELS: Required<LoggingPublishLevels> = { success: "Debug", failure: "Warn", defect: "Error" }

const LEVEL_NAMES: ReadonlyArray<LoggingLevel> = ["Trace", "Debug", "Info", "Warn", "Error", "Fatal", "None"]

/** `levels` names known outcomes only, each with a level; `headers` lists header names (docs/reliability.md, "Options"). */
const checkCommon = (options: unknown, prefix: string, outcomes: ReadonlyArray<string>): Options.Check =>
  Options.fields(prefix, options, (o) =>
    Options.first(
      () =>
        Options.record(`${prefix}.levels`, o.levels, (option, value) =>
          outcomes.includes(option.slice(`${prefix}.levels.`.length))
            ? Options.oneOf(option, value, LEVEL_NAMES)
            : { option, message: `${option} is not an outcome; the outcomes are ${outcomes.join(", ")}` }),
      () => Options.list(`${prefix}.headers`, o.headers, (option, value) => Options.text(option, value, { maxLength: 256 }))
    )
  )

/**
 * Logs `message` at `level` with the annotations `annotations` writes into a fresh record, unless the level is
 * `"None"` or below the fiber's minimum log level: then nothing is built (the payload in particular is not serialized).
 * The record the delivery installed for its handler run is never written to: loggers may keep the annotations of
 * earlier lines (batching exporters do), and fibers the handler forked share that record.
 */
const emit = (
  level: LoggingLevel,
  message: string,
  annotations: (into: Annotations) => Annotations,
  cause?: Cause.Cause<unknown>
): Effect.Effect<void> =>
  level === "None"
    ? Effect.void
    : Effect.withFiber((fiber) => {
      if (LogLevel.isGreaterThan(fiber.getRef(References.MinimumLogLevel), level)) return Effect.void
      const log = cause === undefined ? Effect.logWithLevel(level)(message) : Effect.logWithLevel(level)(message, cause)
      return Effect.updateService(log, References.CurrentLogAnnotations, (current) => annotations(copyOf(current)))
    })

/**
 * The annotations of every line logged while a delivery is handled, the handler's own lines included. The ordering
 * key and stream sequence are left out on purpose: a publish inside the handler would inherit them and seem to carry
 * them.
 */
const deliveryAnnotations = (delivery: Delivery, into: Annotations): Annotations => {
  into["messaging.operation.type"] = "process"
  into["messaging.destination.name"] = delivery.topic
  into["messaging.message.id"] = delivery.eventId
  into["cqbus.attempt"] = delivery.attempt
  if (delivery.group !== undefined) {
    into["messaging.consumer.group.name"] = delivery.group
    into["cqbus.group"] = delivery.group
  }
  return into
}

/**
 * Logs each delivery: `"delivery start"` before the handler runs, then one line for its result as `Verdict.of`
 * decides it (the rule the bus and `metrics()` follow too): `"delivery handled"`, `"delivery failed"`, `"delivery
 * defect"` (with the cause, so the stack is printed), `"delivery interrupted"` or `"delivery dead-lettered"`. Every
 * line, the handler's own included, carries the delivery's topic, event id, attempt and group (the README lists the
 * annotations). It replaces the bus's default warning line for the deliveries it sees (`Verdict.markReported`), so a
 * failure is logged once whatever the middleware order. The failure passes through unchanged. Put it outermost, so
 * it logs the final result of the retried, recovered handler: `pipe(handler, recovery(), retry(), logging())`.
 *
 * @example
 * ```ts
 * import { Effect, pipe } from "effect"
 * import { logging } from "@cqbus/logging"
 * const handler = pipe((_: unknown) => Effect.void, logging({ levels: { success: "Debug" } }))
 * ```
 *
 * @since 0.1.0
 * @category middleware
 */
export const logging = (options: LoggingOptions = {}): Middleware => {
  Options.orThrow(Options.first(
    () => checkCommon(options, "logging", Object.keys(DELIVERY_LEVELS)),
    () => Options.boolean("logging.logPayload", options.logPayload),
    () => Options.func("logging.describe", options.describe)
  ))
  const levels: Required<LoggingLevels> = { ...DELIVERY_LEVELS, ...options.levels }
  const describe = options.logPayload === true ? options.describe ?? describePayload : undefined
  const headers = allowedHeaders(options.headers)
  // Runs once per delivery, so no function is defined in here: the state lives in a `DeliveryLines` object (tools
  // that keep function names, like tsx running the sources, wrap every named closure in a `defineProperty` call).
  return (handler) => (event, delivery) => {
    Verdict.markReported(delivery)
    return Effect.clockWith((clock) => {
      const lines = new DeliveryLines(event, delivery, clock.monotonicTimeNanosUnsafe(), headers, describe)
      return emit(levels.start, "delivery start", (into) => lines.annotations("start", into)).pipe(
        Effect.andThen(Effect.suspend(() => handler(event, delivery))),
        Effect.onExit((exit) => Effect.clockWith((end) => lines.finish(levels, exit, end.monotonicTimeNanosUnsafe()))),
        Effect.updateService(References.CurrentLogAnnotations, (current) => lines.enter(current))
      )
    })
  }
}

/** The plugin's lines for one delivery: their annotations are built once, and only when a line is written. */
class DeliveryLines {
  #payload: unknown
  readonly #event: unknown
  readonly #delivery: Delivery
  readonly #started: bigint
  readonly #headers: ReadonlyArray<string>
  readonly #describe: ((event: unknown) => unknown) | undefined
  constructor(
    event: unknown,
    delivery: Delivery,
    started: bigint,
    headers: ReadonlyArray<string>,
    describe: ((event: unknown) => unknown) | undefined
  ) {
    this.#event = event
    this.#delivery = delivery
    this.#started = started
    this.#headers = headers
    this.#describe = describe
  }

  /** The annotation record for the handler run: the delivery's annotations over the caller's. */
  enter(current: Readonly<Record<string, unknown>>): Annotations {
    return deliveryAnnotations(this.#delivery, copyOf(current))
  }

  /** Writes the plugin's own annotations of one line into `into`. */
  annotations(outcome: string, into: Annotations): Annotations {
    const delivery = this.#delivery
    if (delivery.key !== undefined) into["cqbus.key"] = delivery.key
    if (delivery.sequence !== undefined) into["cqbus.sequence"] = delivery.sequence
    // One by one: reading the whole `headers` record makes some backends decode every header of the message.
    // NATS's own `Nats-*` names keep their case, so only those fall back to a case-insensitive scan.
    for (const name of this.#headers) {
      const value = delivery.header(name) ??
        (name.startsWith("nats-") ? headerValue(delivery.headers, name) : undefined)
      if (value !== undefined) into[`cqbus.header.${name}`] = value
    }
    if (this.#describe !== undefined) {
      this.#payload ??= this.#describe(this.#event)
      into["cqbus.payload"] = this.#payload
    }
    into["cqbus.outcome"] = outcome
    return into
  }

  #done(outcome: string, endNanos: bigint, into: Annotations, verdict?: Verdict.Verdict): Annotations {
    this.annotations(outcome, into)
    // One BigInt operation, then float arithmetic: microsecond resolution in milliseconds.
    into["cqbus.duration_ms"] = Math.floor(Number(endNanos - this.#started) / 1000) / 1000
    if (verdict !== undefined && verdict.kind !== "ack") {
      if (verdict.ending !== "interrupt") {
        // A defect is named by what was thrown (`TypeError`), more telling in a log than the verdict's `Defect`.
        into["error.type"] = verdict.ending === "defect" ? errorTag(verdict.error) : verdict.errorTag
        into["error.message"] = errorMessage(verdict.error)
      }
      if (verdict.kind === "dead_letter") into["cqbus.dead_letter.reason"] = verdict.reason
    }
    return into
  }

  /** The line for the handler's result: what `Verdict.of` says the bus does with the message. */
  finish(levels: Required<LoggingLevels>, exit: Exit.Exit<void, unknown>, endNanos: bigint): Effect.Effect<void> {
    const verdict = Verdict.of(exit, this.#delivery)
    if (verdict.kind === "ack") {
      return emit(levels.success, "delivery handled", (into) => this.#done("handled", endNanos, into))
    }
    const cause = verdict.ending === "defect" ? (exit as Exit.Failure<void, unknown>).cause : undefined
    if (verdict.kind === "dead_letter") {
      return emit(
        verdict.errorTag === "Reject" ? levels.reject : levels.deadLetter,
        "delivery dead-lettered",
        (into) => this.#done("dead_letter", endNanos, into, verdict),
        cause
      )
    }
    return verdict.ending === "failure"
      ? emit(levels.failure, "delivery failed", (into) => this.#done("failed", endNanos, into, verdict))
      : verdict.ending === "defect"
      ? emit(levels.defect, "delivery defect", (into) => this.#done("defect", endNanos, into, verdict), cause)
      : emit(levels.interrupt, "delivery interrupted", (into) => this.#done("interrupted", endNanos, into, verdict))
  }
}

const publishAnnotations = (
  message: OutgoingMessage,
  headers: ReadonlyArray<string>,
  durationMs: number
): Annotations => {
  const annotations: Annotations = {
    "messaging.operation.type": "send",
    "messaging.destination.name": message.topic,
    "messaging.message.id": message.eventId,
    "messaging.message.body.size": message.body.length
  }
  if (message.key !== undefined) annotations["cqbus.key"] = message.key
  addHeaders(annotations, message.headers, headers)
  annotations["cqbus.duration_ms"] = durationMs
  return annotations
}

/**
 * Logs each publish: `"published"` (with `cqbus.stream`, `cqbus.sequence` and `cqbus.duplicate` from the
 * acknowledgement) or `"publish failed"` (with `error.type` `PublishError`, `cqbus.error.reason`,
 * `cqbus.error.retriable` and `error.message`), annotated with `messaging.operation.type` (`send`),
 * `messaging.destination.name`, `messaging.message.id`, `messaging.message.body.size`, `cqbus.key` when the event has
 * one, and `cqbus.duration_ms` (measured on Effect's `Clock`). The body is never logged. Put it last in
 * `publishMiddleware` so it runs outermost and times everything the other publish middleware does.
 *
 * @example
 * ```ts
 * import { EventBus } from "@cqbus/core"
 * import { loggingPublish } from "@cqbus/logging"
 * const layer = EventBus.layerMemory({ publishMiddleware: [loggingPublish()] })
 * ```
 *
 * @since 0.1.0
 * @category middleware
 */
export const loggingPublish = (options: LoggingPublishOptions = {}): PublishMiddleware => {
  Options.orThrow(checkCommon(options, "loggingPublish", Object.keys(PUBLISH_LEVELS)))
  const levels: Required<LoggingPublishLevels> = { ...PUBLISH_LEVELS, ...options.levels }
  const headers = allowedHeaders(options.headers)
  return (next) => (message) =>
    Effect.clockWith((clock) => {
      const started = clock.monotonicTimeNanosUnsafe()
      const finish = (exit: Exit.Exit<PublishAck, PublishError>): Effect.Effect<void> =>
        Effect.clockWith((end) => {
          const done = (extra: Annotations): Annotations => ({
            ...publishAnnotations(message, headers, millisSince(started, end.monotonicTimeNanosUnsafe())),
            ...extra
          })
          if (Exit.isSuccess(exit)) {
            const ack = exit.value
            return emit(levels.success, "published", () =>
              done({ "cqbus.stream": ack.stream, "cqbus.sequence": ack.sequence, "cqbus.duplicate": ack.duplicate }))
          }
          const failure = Cause.findError(exit.cause)
          if (Result.isSuccess(failure)) {
            const error = failure.success
            return emit(levels.failure, "publish failed", () =>
              done({
                "error.type": errorTag(error),
                "error.message": error.message,
                "cqbus.error.reason": error.reason,
                "cqbus.error.retriable": error.retriable
              }))
          }
          const defect = Cause.findDefect(exit.cause)
          return Result.isSuccess(defect)
            ? emit(levels.defect, "publish defect", () =>
              done({ "error.type": errorTag(defect.success), "error.message": errorMessage(defect.success) }), exit.cause)
            : Effect.void
        })
      return Effect.suspend(() => next(message)).pipe(Effect.onExit(finish))
    })
}
