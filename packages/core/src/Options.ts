/**
 * Option validation shared by every cqbus package, so a bad option is refused where it is given (layer construction,
 * `subscribe`, `publish`, a plugin constructor) with a message that reads the same everywhere: the option, the value
 * (never a credential) and the accepted range, e.g. `maxPendingPublishes must be an integer from 1 to 1000000, got
 * NaN`. Each check answers a `Problem` (or `undefined` when the value is fine); each package wraps the problem in its
 * own tagged error (`ConfigError`, `SubscribeError` reason `InvalidOptions`, `NatsError` reason `Config`, ...).
 * Durations go through one parser, `parseDuration`, which refuses what `Duration.fromInputUnsafe` would throw on or
 * silently turn into 0 (`NaN`, `"5 secs"`, `{ foo: 1 }`).
 *
 * @module
 */
import { Duration, Option } from "effect"
import { ConfigError } from "./Errors.ts"
import { checkTopic } from "./Topic.ts"

/**
 * What is wrong with one option: its path (`stream.maxAge`, `subscribe.concurrency`) and a full sentence.
 *
 * @since 0.1.0
 * @category models
 */
export interface Problem {
  readonly option: string
  readonly message: string
}

/**
 * The result of a check: `undefined` when the value is accepted.
 *
 * @since 0.1.0
 * @category models
 */
export type Check = Problem | undefined

/**
 * The largest value NATS stores for a count (an int64 on the server), as far as a JavaScript number holds it exactly.
 *
 * @since 0.1.0
 * @category constants
 */
export const MAX_COUNT: number = Number.MAX_SAFE_INTEGER

/**
 * A value as a problem message shows it: numbers as JavaScript prints them (`NaN`, `-5000`), strings quoted and cut
 * at 64 characters, durations formatted, anything else by its kind (`an array of 0`, `a function`), so an object that
 * may hold a credential is never printed.
 *
 * @since 0.1.0
 * @category formatting
 */
export const show = (value: unknown): string => {
  if (typeof value === "number" || typeof value === "bigint" || typeof value === "boolean") return String(value)
  if (typeof value === "string") return JSON.stringify(value.length > 64 ? `${value.slice(0, 64)}…` : value)
  if (value === null) return "null"
  if (value === undefined) return "undefined"
  if (Duration.isDuration(value)) return Duration.format(value)
  if (Array.isArray(value)) return `an array of ${value.length}`
  return typeof value === "object" ? "an object" : `a ${typeof value}`
}

const problem = (option: string, message: string): Problem => ({ option, message })

/**
 * An integer from `min` to `max`; `also` lists extra accepted values outside the range (NATS's `-1` = unlimited).
 *
 * @since 0.1.0
 * @category checks
 */
export const integer = (
  option: string,
  value: unknown,
  range: { readonly min: number; readonly max: number; readonly also?: ReadonlyArray<number> }
): Check =>
  value === undefined || (typeof value === "number" && Number.isInteger(value) &&
      ((value >= range.min && value <= range.max) || (range.also ?? []).includes(value)))
    ? undefined
    : problem(
      option,
      `${option} must be an integer from ${range.min} to ${range.max}${
        range.also === undefined ? "" : range.also.map((n) => ` or ${n}`).join("")
      }, got ${show(value)}`
    )

/**
 * A finite number from `min` to `max`.
 *
 * @since 0.1.0
 * @category checks
 */
export const number = (option: string, value: unknown, range: { readonly min: number; readonly max: number }): Check =>
  value === undefined || (typeof value === "number" && Number.isFinite(value) && value >= range.min && value <= range.max)
    ? undefined
    : problem(option, `${option} must be a number from ${range.min} to ${range.max}, got ${show(value)}`)

/**
 * `true` or `false`.
 *
 * @since 0.1.0
 * @category checks
 */
export const boolean = (option: string, value: unknown): Check =>
  value === undefined || typeof value === "boolean"
    ? undefined
    : problem(option, `${option} must be true or false, got ${show(value)}`)

/**
 * One of the listed values.
 *
 * @since 0.1.0
 * @category checks
 */
export const oneOf = (option: string, value: unknown, allowed: ReadonlyArray<unknown>): Check =>
  value === undefined || allowed.includes(value)
    ? undefined
    : problem(option, `${option} must be one of ${allowed.map(show).join(", ")}, got ${show(value)}`)

/**
 * A function (a callback option such as `while` or `describe`).
 *
 * @since 0.1.0
 * @category checks
 */
export const func = (option: string, value: unknown): Check =>
  value === undefined || typeof value === "function"
    ? undefined
    : problem(option, `${option} must be a function, got ${show(value)}`)

/**
 * A string of 1 to `maxLength` characters without control characters (it ends up in a header or a log line). With
 * `secret`, the value is never shown.
 *
 * @since 0.1.0
 * @category checks
 */
export const text = (
  option: string,
  value: unknown,
  { maxLength = 4096, secret = false }: { readonly maxLength?: number; readonly secret?: boolean } = {}
): Check => {
  if (value === undefined) return undefined
  const range = `a string of 1 to ${maxLength} characters without control characters`
  const got = secret ? "" : `, got ${show(value)}`
  if (typeof value !== "string" || value.length === 0 || value.length > maxLength) {
    return problem(option, `${option} must be ${range}${got}`)
  }
  const control = value.search(/[\u0000-\u001f\u007f]/)
  return control < 0
    ? undefined
    : problem(option, `${option} must be ${range}, got one with a control character at position ${control}${got}`)
}

/**
 * The longest stream, consumer (group) or queue name accepted: nats-server refuses longer names (`JSMaxNameLen`).
 *
 * @since 0.1.0
 * @category constants
 */
export const MAX_NAME_LENGTH: number = 255

/**
 * A NATS stream or consumer (group) name: 1 to 255 characters, none of them whitespace, a control character, `.`,
 * `*`, `>` (subject syntax) or `/`, `\` (the server stores names as directory names).
 *
 * @since 0.1.0
 * @category checks
 */
export const name = (option: string, value: unknown): Check => {
  if (value === undefined) return undefined
  const rule = `a name of 1 to ${MAX_NAME_LENGTH} characters without whitespace, control characters, ".", "*", ">", "/" or "\\"`
  if (typeof value !== "string" || value.length === 0 || value.length > MAX_NAME_LENGTH) {
    return problem(option, `${option} must be ${rule}, got ${show(value)}`)
  }
  const bad = value.search(/[\s\u0000-\u001f\u007f.*>/\\]/u)
  return bad < 0
    ? undefined
    : problem(option, `${option} must be ${rule}, got ${show(value)} (character ${bad})`)
}

/**
 * A concrete subject or subject prefix (no wildcards), by the topic rules of `validateTopic`.
 *
 * @since 0.1.0
 * @category checks
 */
export const subject = (option: string, value: unknown): Check => {
  if (value === undefined) return undefined
  if (typeof value !== "string") return problem(option, `${option} must be a subject, got ${show(value)}`)
  const invalid = checkTopic(value, "subject")
  return invalid === undefined ? undefined : problem(option, `${option} must be a subject without wildcards: ${invalid.message}`)
}

/**
 * A non-empty list of subjects or wildcard patterns (`cqc.events.v1.>`), each valid.
 *
 * @since 0.1.0
 * @category checks
 */
export const patterns = (option: string, value: unknown): Check => {
  if (value === undefined) return undefined
  if (!Array.isArray(value) || value.length === 0) {
    return problem(option, `${option} must be a non-empty list of subjects, got ${show(value)}`)
  }
  for (let i = 0; i < value.length; i++) {
    const item: unknown = value[i]
    const path = `${option}[${i}]`
    if (typeof item !== "string") return problem(path, `${path} must be a subject, got ${show(item)}`)
    const invalid = checkTopic(item, "pattern")
    if (invalid !== undefined) return problem(path, `${path} is not a valid subject: ${invalid.message}`)
  }
  return undefined
}

const UNITS: ReadonlySet<string> = new Set([
  "weeks",
  "days",
  "hours",
  "minutes",
  "seconds",
  "milliseconds",
  "microseconds",
  "nanoseconds"
])

const DURATION_FORMS = `a Duration, a number of milliseconds, "<number> <unit>" (e.g. "5 seconds"), [seconds, nanos] or { seconds: 5 }`

/**
 * The one duration parser: a `Duration.Input` to a finite `Duration`, or a `Problem` for input that
 * `Duration.fromInputUnsafe` would throw on (`"5 secs"`) or silently read as 0 (`NaN`, `{ foo: 1 }`) or as infinite.
 * It does not check a range: `duration` does.
 *
 * @since 0.1.0
 * @category parsing
 */
export const parseDuration = (option: string, value: unknown): Duration.Duration | Problem => {
  const fail = (why: string) => problem(option, `${option} must be a duration (${DURATION_FORMS}), got ${why}`)
  if (typeof value === "number" && !Number.isFinite(value)) return fail(show(value))
  if (Array.isArray(value)) {
    if (value.length !== 2 || !value.every((n) => typeof n === "number" && Number.isFinite(n))) return fail(show(value))
  } else if (typeof value === "object" && value !== null && !Duration.isDuration(value)) {
    const entries = Object.entries(value)
    if (entries.length === 0 || !entries.every(([k, v]) => UNITS.has(k) && typeof v === "number" && Number.isFinite(v))) {
      return fail(`an object with ${entries.length === 0 ? "no fields" : `fields ${entries.map(([k]) => k).join(", ")}`}`)
    }
  } else if (typeof value !== "number" && typeof value !== "bigint" && typeof value !== "string" && !Duration.isDuration(value)) {
    return fail(show(value))
  }
  let parsed: Option.Option<Duration.Duration>
  try {
    parsed = Duration.fromInput(value as Duration.Input)
  } catch {
    return fail(show(value))
  }
  if (Option.isNone(parsed)) return fail(show(value))
  if (!Duration.isFinite(parsed.value)) return fail(`${show(value)} (infinite)`)
  return parsed.value
}

/**
 * A duration from `min` to `max` (inclusive); `undefined` is accepted (the default applies).
 *
 * @since 0.1.0
 * @category checks
 */
export const duration = (
  option: string,
  value: unknown,
  range: { readonly min: Duration.Input; readonly max: Duration.Input }
): Check => {
  if (value === undefined) return undefined
  const parsed = parseDuration(option, value)
  if (!Duration.isDuration(parsed)) return parsed
  const min = Duration.fromInputUnsafe(range.min)
  const max = Duration.fromInputUnsafe(range.max)
  // Compared in milliseconds, the unit every consumer of a duration reads (`Duration.toMillis`).
  const millis = Duration.toMillis(parsed)
  return millis >= Duration.toMillis(min) && millis <= Duration.toMillis(max)
    ? undefined
    : problem(
      option,
      `${option} must be a duration from ${Duration.format(min)} to ${Duration.format(max)}, got ${
        typeof value === "string" ? show(value) : Duration.format(parsed)
      }`
    )
}

/**
 * A plain object (an options bag); `undefined` is accepted.
 *
 * @since 0.1.0
 * @category checks
 */
export const object = (option: string, value: unknown): Check =>
  value === undefined || (typeof value === "object" && value !== null && !Array.isArray(value))
    ? undefined
    : problem(option, `${option} must be an object, got ${show(value)}`)

/**
 * An options object (or `undefined`) whose fields pass `check`; `check` runs only once the value is known to be an
 * object, and gets `{}` for `undefined`.
 *
 * @since 0.1.0
 * @category checks
 */
export const fields = (
  option: string,
  value: unknown,
  check: (fields: Readonly<Record<string, unknown>>) => Check
): Check => first(() => object(option, value), () => check((value ?? {}) as Record<string, unknown>))

/**
 * A list whose items each pass `item` (called with the item's path, `option[i]`); `nonEmpty` refuses `[]`.
 *
 * @since 0.1.0
 * @category checks
 */
export const list = (
  option: string,
  value: unknown,
  item: (option: string, value: unknown) => Check,
  { nonEmpty = false }: { readonly nonEmpty?: boolean } = {}
): Check => {
  if (value === undefined) return undefined
  if (!Array.isArray(value) || (nonEmpty && value.length === 0)) {
    return problem(option, `${option} must be a ${nonEmpty ? "non-empty " : ""}list, got ${show(value)}`)
  }
  for (let i = 0; i < value.length; i++) {
    const found = item(`${option}[${i}]`, value[i])
    if (found !== undefined) return found
  }
  return undefined
}

/**
 * An object whose values each pass `item` (called with the path `option.key`).
 *
 * @since 0.1.0
 * @category checks
 */
export const record = (option: string, value: unknown, item: (option: string, value: unknown) => Check): Check => {
  if (value === undefined) return undefined
  const found = object(option, value)
  if (found !== undefined) return found
  for (const [key, v] of Object.entries(value as object)) {
    const bad = item(`${option}.${key}`, v)
    if (bad !== undefined) return bad
  }
  return undefined
}

/**
 * The first problem of several checks, run lazily in order (so a later check may assume an earlier one passed).
 *
 * @since 0.1.0
 * @category combinators
 */
export const first = (...checks: ReadonlyArray<Check | (() => Check)>): Check => {
  for (const check of checks) {
    const result = typeof check === "function" ? check() : check
    if (result !== undefined) return result
  }
  return undefined
}

/**
 * The problem as a `ConfigError` (for options that are not given inside an Effect with an error type of its own).
 *
 * @since 0.1.0
 * @category errors
 */
export const toConfigError = (found: Problem): ConfigError => new ConfigError({ option: found.option, message: found.message })

/**
 * For plain (non-Effect) constructors such as plugin factories: throws the problem as a `ConfigError`, so a bad option
 * stops the program where it is written, with the typed error, instead of failing every delivery later.
 *
 * @since 0.1.0
 * @category errors
 */
export const orThrow = (found: Check): void => {
  if (found !== undefined) throw toConfigError(found)
}

/**
 * The durations an option may take, shared where several packages accept the same kind of value.
 *
 * @since 0.1.0
 * @category constants
 */
export const Ranges: {
  /** Waits for an answer (publish, check, request): 1 ms to 1 hour. */
  readonly timeout: { readonly min: Duration.Input; readonly max: Duration.Input }
  /** How long a drain may wait for running work: 0 (hand back at once) to 1 hour. */
  readonly drain: { readonly min: Duration.Input; readonly max: Duration.Input }
  /** A redelivery or retry delay: 0 to 1 day. */
  readonly delay: { readonly min: Duration.Input; readonly max: Duration.Input }
} = {
  timeout: { min: "1 millis", max: "1 hours" },
  drain: { min: 0, max: "1 hours" },
  delay: { min: 0, max: "1 days" }
}
