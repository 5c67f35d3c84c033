/**
 * Topic names: the CQC naming convention (`cqc.events.v1.asset_created`), the derivation of a topic from a protobuf
 * message, and the validation of topics and subscription patterns against the rules of NATS subjects, so a bad name
 * fails early with an error that says exactly what is wrong.
 *
 * @module
 */
import type { DescMessage } from "@bufbuild/protobuf"
import { Effect } from "effect"
import { InvalidTopic, type InvalidTopicProblem } from "./Errors.ts"

/**
 * The prefix `topicName` puts in front of an event type: CQC's own event namespace.
 *
 * @since 0.1.0
 * @category topics
 */
export const DEFAULT_TOPIC_PREFIX = "cqc.events.v1"

/**
 * The longest topic accepted, in characters (the NATS limit for subjects that JetStream tooling handles well).
 *
 * @since 0.1.0
 * @category topics
 */
export const MAX_TOPIC_LENGTH = 255

/**
 * The CQC convention: `<domain>[.<domain>...].events.v<N>.<event_type>`, lower case, tokens made of `a-z`, `0-9`, `_`.
 */
const CONVENTION = /^(?:[a-z][a-z0-9_]*\.)+events\.v[1-9][0-9]*\.([a-z][a-z0-9_]*)$/

/**
 * The topic of an event type in a namespace: `topicName("asset_created")` is `"cqc.events.v1.asset_created"`. The
 * event type is lower-cased, as CQC's Go `TopicName` does (`"POSITION_CHANGED"` → `position_changed`), so both
 * languages derive the same subject from the same input; pass snake_case (`topicOf` derives it from a schema).
 *
 * @since 0.1.0
 * @category topics
 */
export const topicName = (eventType: string, prefix: string = DEFAULT_TOPIC_PREFIX): string =>
  `${prefix}.${eventType.toLowerCase()}`

/**
 * The event type of a topic that follows the CQC convention (`"asset_created"` for
 * `"cqc.events.v1.asset_created"`); any other input is returned unchanged.
 *
 * @since 0.1.0
 * @category topics
 */
export const parseEventType = (topic: string): string => CONVENTION.exec(topic)?.[1] ?? topic

/**
 * Whether a topic follows the CQC convention `<domain>.events.v<N>.<event_type>`.
 *
 * @since 0.1.0
 * @category topics
 */
export const isValidTopic = (topic: string): boolean => topic.length <= MAX_TOPIC_LENGTH && CONVENTION.test(topic)

/**
 * `AssetCreated` → `asset_created`; runs of capitals stay one word (`HTTPRequestSent` → `http_request_sent`).
 *
 * @since 0.1.0
 * @category topics
 */
export const snakeCase = (name: string): string =>
  name
    .replace(/([a-z0-9])([A-Z])/g, "$1_$2")
    .replace(/([A-Z]+)([A-Z][a-z])/g, "$1_$2")
    .toLowerCase()

/**
 * The default topic of a protobuf message: its package followed by its snake_case name, so
 * `cqc.events.v1.AssetCreated` publishes on `cqc.events.v1.asset_created`, the subject CQC's Go services use.
 * A nested message keeps its parents' names (`Outer.Inner` → `outer_inner`).
 *
 * @since 0.1.0
 * @category topics
 */
export const topicOf = (schema: DescMessage): string => {
  const pkg = schema.file.proto.package
  const local = pkg === "" ? schema.typeName : schema.typeName.slice(pkg.length + 1)
  const name = local.split(".").map(snakeCase).join("_")
  return pkg === "" ? name : `${pkg}.${name}`
}

/**
 * Whether a topic must be concrete (`"subject"`, what publish needs) or may contain NATS wildcards (`"pattern"`,
 * what subscribe accepts: `*` matches one token, `>` one or more trailing tokens).
 *
 * @since 0.1.0
 * @category topics
 */
export type TopicKind = "subject" | "pattern"

const fail = (topic: string, problem: InvalidTopicProblem, position: number | undefined, detail: string) =>
  new InvalidTopic({ topic, problem, position, message: `invalid topic ${JSON.stringify(topic)}: ${detail}` })

const describeChar = (code: number): string =>
  code === 32 ? "a space" : code === 9 ? "a tab" : code === 10 ? "a line feed" : code === 13 ? "a carriage return"
  : `U+${code.toString(16).toUpperCase().padStart(4, "0")}`

/**
 * The synchronous core of `validateTopic`: `undefined` when the topic is valid, the error otherwise. Backends call it
 * on hot paths where an Effect per call would cost more than the check.
 *
 * @since 0.1.0
 * @category topics
 */
export const checkTopic = (topic: string, kind: TopicKind = "subject"): InvalidTopic | undefined => {
  if (typeof topic !== "string" || topic.length === 0) return fail(String(topic), "Empty", undefined, "it is empty")
  if (topic.length > MAX_TOPIC_LENGTH) {
    return fail(topic, "TooLong", MAX_TOPIC_LENGTH, `it is ${topic.length} characters long; the limit is ${MAX_TOPIC_LENGTH}`)
  }
  let tokenStart = 0
  for (let i = 0; i <= topic.length; i++) {
    const code = i < topic.length ? topic.charCodeAt(i) : 46 // a virtual "." closes the last token
    if (code > 127) {
      const char = String.fromCodePoint(topic.codePointAt(i)!)
      return fail(topic, "NonAscii", i, `non-ASCII character ${JSON.stringify(char)} at index ${i}; topics are ASCII only`)
    }
    if (code === 32 || code === 9 || code === 10 || code === 13 || code === 11 || code === 12) {
      return fail(topic, "Whitespace", i, `whitespace (${describeChar(code)}) at index ${i}`)
    }
    if (code < 32 || code === 127) {
      return fail(topic, "ControlCharacter", i, `control character ${describeChar(code)} at index ${i}`)
    }
    if (code !== 46) continue
    const token = topic.slice(tokenStart, i)
    if (token.length === 0) {
      const where = tokenStart === 0 ? "a leading dot" : i === topic.length ? "a trailing dot" : "two dots in a row"
      return fail(topic, "EmptyToken", tokenStart, `empty token at index ${tokenStart} (${where})`)
    }
    if (token === "*" || token === ">") {
      if (kind === "subject") {
        return fail(topic, "Wildcard", tokenStart,
          `wildcard ${JSON.stringify(token)} at index ${tokenStart}; a concrete topic is needed here, wildcards only work in subscriptions`)
      }
      if (token === ">" && i !== topic.length) {
        return fail(topic, "MisplacedWildcard", tokenStart, `">" at index ${tokenStart} must be the last token`)
      }
    } else if (token.includes("*") || token.includes(">")) {
      const at = tokenStart + Math.max(token.indexOf("*"), token.indexOf(">"))
      return fail(topic, "MisplacedWildcard", at,
        `wildcard character at index ${at} inside the token ${JSON.stringify(token)}; "*" and ">" must be whole tokens`)
    }
    tokenStart = i + 1
  }
  return undefined
}

/**
 * Checks a topic against the NATS subject rules and fails with an `InvalidTopic` that names the problem and, for a
 * character, its index: empty, longer than 255, non-ASCII, whitespace or control characters, empty tokens
 * (`a..b`, a leading or trailing dot), and wildcards where a concrete topic is needed (`kind: "subject"`, the
 * default). With `kind: "pattern"`, whole-token `*` and a final `>` are allowed.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { validateTopic } from "@cqbus/core"
 * Effect.runSync(Effect.flip(validateTopic("cqc.events..x"))).message
 * // 'invalid topic "cqc.events..x": empty token at index 11 (two dots in a row)'
 * ```
 *
 * @since 0.1.0
 * @category topics
 */
export const validateTopic = (topic: string, kind: TopicKind = "subject"): Effect.Effect<string, InvalidTopic> => {
  const error = checkTopic(topic, kind)
  return error === undefined ? Effect.succeed(topic) : Effect.fail(error)
}

/**
 * A matcher for a subscription pattern, compiled once: a plain equality test when the pattern has no wildcard.
 *
 * @since 0.1.0
 * @category topics
 */
export const compilePattern = (pattern: string): (topic: string) => boolean => {
  const tokens = pattern.split(".")
  if (!tokens.some((t) => t === "*" || t === ">")) return (topic) => topic === pattern
  const tail = tokens[tokens.length - 1] === ">"
  const fixed = tail ? tokens.length - 1 : tokens.length
  return (topic) => {
    const parts = topic.split(".")
    if (tail ? parts.length <= fixed : parts.length !== fixed) return false
    for (let i = 0; i < fixed; i++) {
      if (tokens[i] !== "*" && tokens[i] !== parts[i]) return false
    }
    return true
  }
}
