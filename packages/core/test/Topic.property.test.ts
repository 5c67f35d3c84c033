// Property tests (fast-check, fixed seed so every lane runs the same cases; a failure prints the seed and the
// shrunk counterexample) for topic validation: `checkTopic`/`validateTopic`/`isValidTopic` never throw, classify every
// string, and accept exactly the strings that are valid NATS publish subjects under the rules cqbus documents
// (DESIGN §3): 1–255 printable ASCII characters, dot-separated non-empty tokens, no `*` or `>` anywhere.
import assert from "node:assert/strict"
import { test } from "node:test"
import { Effect, Exit } from "effect"
import fc from "fast-check"
import { InvalidTopic, isValidTopic, MAX_TOPIC_LENGTH, validateTopic } from "../src/index.ts"
import { checkTopic } from "../src/backend.ts"

const RUNS = { seed: 11, numRuns: 2_000 } as const

/** The NATS publish-subject rules, written from the specification rather than from `checkTopic`. */
const isPublishSubject = (s: string): boolean => {
  if (s.length === 0 || s.length > MAX_TOPIC_LENGTH) return false
  for (const token of s.split(".")) {
    if (token.length === 0) return false
    for (const char of token) {
      const code = char.codePointAt(0)!
      if (code < 33 || code > 126 || char === "*" || char === ">") return false
    }
  }
  return true
}

/** Strings near the boundary: mostly topic characters, with the hostile ones mixed in. */
const topicLike = fc.array(
  fc.constantFrom("a", "b", "z", "0", "_", "-", ".", ".", "*", ">", " ", "\t", "\r", "\n", "\u0000", "\u007f", "é", "€", "😀", "events", "v1"),
  { maxLength: 40 }
).map((parts) => parts.join(""))
const anyTopic = fc.oneof(
  topicLike,
  fc.string({ unit: "binary", maxLength: 300 }),
  fc.string({ unit: fc.constantFrom("a", "."), minLength: 250, maxLength: 260 })
)

const PROBLEMS = new Set(["Empty", "TooLong", "NonAscii", "Whitespace", "ControlCharacter", "EmptyToken", "Wildcard", "MisplacedWildcard"])

test("topic property: checkTopic never throws and accepts exactly the NATS publish subjects", () => {
  fc.assert(
    fc.property(anyTopic, (topic) => {
      const error = checkTopic(topic, "subject")
      assert.equal(error === undefined, isPublishSubject(topic), `checkTopic(${JSON.stringify(topic)}) = ${error?.problem}`)
      if (error !== undefined) {
        assert.ok(error instanceof InvalidTopic)
        assert.ok(PROBLEMS.has(error.problem), error.problem)
        assert.equal(error.topic, topic)
        assert.ok(error.message.startsWith("invalid topic "), error.message)
        if (error.position !== undefined) assert.ok(error.position >= 0 && error.position <= topic.length)
      }
    }),
    RUNS
  )
})

test("topic property: validateTopic agrees with checkTopic; isValidTopic (the CQC convention) implies a valid subject", () => {
  fc.assert(
    fc.property(anyTopic, (topic) => {
      const exit = Effect.runSyncExit(validateTopic(topic))
      assert.equal(Exit.isSuccess(exit), checkTopic(topic) === undefined)
      const conventional = isValidTopic(topic)
      assert.equal(typeof conventional, "boolean")
      if (conventional) assert.ok(isPublishSubject(topic), `${JSON.stringify(topic)} follows the convention but is no subject`)
    }),
    RUNS
  )
})

test("topic property: a pattern is accepted iff it is a subject with whole-token `*` and at most a final `>`", () => {
  const isPattern = (s: string): boolean => {
    const tokens = s.split(".")
    const concrete = tokens.map((t, i) => t === "*" || (t === ">" && i === tokens.length - 1) ? "x" : t).join(".")
    return s.length <= MAX_TOPIC_LENGTH && isPublishSubject(concrete)
  }
  fc.assert(
    fc.property(anyTopic, (topic) => {
      const error = checkTopic(topic, "pattern")
      assert.equal(error === undefined, isPattern(topic), `checkTopic(${JSON.stringify(topic)}, "pattern") = ${error?.problem}`)
    }),
    RUNS
  )
})
