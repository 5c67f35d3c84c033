// The shared option checks (`Options`): each kind of check refuses what it must with a message naming the option, the
// value and the range, accepts its boundaries, and never throws, whatever it is given (fast-check).
import { ConfigError } from "@cqbus/core"
import { Options } from "@cqbus/core/backend"
import { Duration } from "effect"
import fc from "fast-check"
import assert from "node:assert/strict"
import { test } from "node:test"

/** Asserts a problem for `option` whose message matches `text`. */
const refused = (found: Options.Check, option: string, text: RegExp): void => {
  assert.ok(found !== undefined, `${option} is refused`)
  assert.equal(found.option, option)
  assert.match(found.message, text)
}

test("Options.integer: bad values are refused naming the option, the range and the value; boundaries pass", () => {
  const range = { min: 1, max: 1_000_000 }
  for (const [value, shown] of [[NaN, "NaN"], [0, "0"], [1_000_001, "1000001"], [1.5, "1.5"], [Infinity, "Infinity"], ["5", '"5"'], [null, "null"]] as const) {
    refused(
      Options.integer("maxPendingPublishes", value, range),
      "maxPendingPublishes",
      new RegExp(`^maxPendingPublishes must be an integer from 1 to 1000000, got ${shown}$`)
    )
  }
  for (const value of [undefined, 1, 1_000_000]) assert.equal(Options.integer("x", value, range), undefined)
  // NATS's -1 (unlimited) is accepted where listed, and said so.
  assert.equal(Options.integer("maxBytes", -1, { min: 1, max: 10, also: [-1] }), undefined)
  refused(Options.integer("maxBytes", -2, { min: 1, max: 10, also: [-1] }), "maxBytes", /from 1 to 10 or -1, got -2/)
})

test("Options.parseDuration: one parser for every duration; bad input is a Problem, never a throw or a silent 0", () => {
  for (const bad of [NaN, Infinity, -Infinity, "Infinity", "5 secs", "abc", "", " 5 seconds", [NaN, 0], [1], { foo: 1 }, {}, { seconds: NaN }, null, true]) {
    const parsed = Options.parseDuration("ackWait", bad)
    assert.ok(!Duration.isDuration(parsed), `${String(bad)} is refused`)
    assert.equal(parsed.option, "ackWait")
    assert.match(parsed.message, /^ackWait must be a duration \(/)
  }
  for (const [good, millis] of [[5000, 5000], ["5 seconds", 5000], [[5, 0], 5000], [{ seconds: 5 }, 5000], [Duration.seconds(5), 5000], [5_000_000_000n, 5000]] as const) {
    const parsed = Options.parseDuration("ackWait", good)
    assert.ok(Duration.isDuration(parsed), `${String(good)} parses`)
    assert.equal(Duration.toMillis(parsed), millis)
  }
})

test("Options.duration: negative, zero and too long durations are refused with the range; the boundaries pass", () => {
  const range = { min: "100 millis", max: "1 days" } as const
  refused(Options.duration("ackWait", -5000, range), "ackWait", /^ackWait must be a duration from 100ms to 1d, got -5s$/)
  refused(Options.duration("ackWait", 0, range), "ackWait", /from 100ms to 1d, got 0/)
  refused(Options.duration("ackWait", "2 days", range), "ackWait", /from 100ms to 1d, got "2 days"/)
  refused(Options.duration("ackWait", NaN, range), "ackWait", /must be a duration .* got NaN/)
  for (const value of [undefined, 100, "100 millis", "1 days", Duration.days(1)]) {
    assert.equal(Options.duration("ackWait", value, range), undefined, String(value))
  }
})

test("Options.name: NATS stream and consumer name rules (no whitespace, '.', '*', '>', '/', '\\', NUL; 1 to 255)", () => {
  for (const bad of ["", "a b", "a.b", "a*", "a>", "a/b", "a\\b", "a\u0000b", "a\tb", "x".repeat(256), 5]) {
    refused(Options.name("group", bad), "group", /^group must be a name of 1 to 255 characters without whitespace/)
  }
  for (const good of [undefined, "audit", "a-b_c", "x".repeat(255), "ünïcode"]) assert.equal(Options.name("group", good), undefined)
})

test("Options.patterns / subject / text / oneOf: lists, subjects and one-line strings", () => {
  refused(Options.patterns("stream.subjects", []), "stream.subjects", /non-empty list of subjects, got an array of 0/)
  refused(Options.patterns("stream.subjects", ["a..b"]), "stream.subjects[0]", /not a valid subject/)
  assert.equal(Options.patterns("stream.subjects", ["cqc.events.v1.>"]), undefined)
  refused(Options.subject("deadLetters.subjectPrefix", "dlq.>"), "deadLetters.subjectPrefix", /without wildcards/)
  refused(Options.text("eventId", "a\rb"), "eventId", /control character at position 1/)
  refused(Options.text("user", 7, { secret: true }), "user", /^user must be a string of 1 to 4096 characters without control characters$/)
  refused(Options.oneOf("ordering", "fifo", ["none", "key"]), "ordering", /must be one of "none", "key", got "fifo"/)
})

test("Options.orThrow: a problem becomes a ConfigError naming the option (for plain constructors)", () => {
  assert.throws(
    () => Options.orThrow(Options.integer("retry.times", -1, { min: 0, max: 10 })),
    (error: unknown) => error instanceof ConfigError && error.option === "retry.times" && /retry\.times must be/.test(error.message)
  )
  assert.doesNotThrow(() => Options.orThrow(undefined))
})

/** Any JavaScript value a caller could pass. */
const anything = fc.oneof(
  fc.anything(),
  fc.double(),
  fc.integer(),
  fc.constantFrom(NaN, Infinity, -Infinity, -0, -1, 0, 1, Number.MAX_SAFE_INTEGER, 2 ** 53),
  fc.string(),
  fc.tuple(fc.double(), fc.double()),
  fc.record({ seconds: fc.double(), millis: fc.double() }, { requiredKeys: [] }),
  fc.tuple(fc.double({ noNaN: true, min: -1e6, max: 1e6 }), fc.constantFrom("millis", "seconds", "minutes", "days", "secs", "")).map(
    ([n, unit]) => `${n} ${unit}`
  )
)

const isProblemOrUndefined = (found: unknown, option: string): boolean =>
  found === undefined ||
  (typeof found === "object" && found !== null && (found as Options.Problem).option.startsWith(option) &&
    (found as Options.Problem).message.startsWith(option))

test("property: every check answers a Problem naming the option or undefined, for any value, and never throws", () => {
  fc.assert(
    fc.property(anything, (value) => {
      assert.ok(isProblemOrUndefined(Options.integer("n", value, { min: 1, max: 10 }), "n"))
      assert.ok(isProblemOrUndefined(Options.number("n", value, { min: 0, max: 1 }), "n"))
      assert.ok(isProblemOrUndefined(Options.duration("d", value, { min: 0, max: "1 days" }), "d"))
      assert.ok(isProblemOrUndefined(Options.name("g", value), "g"))
      assert.ok(isProblemOrUndefined(Options.patterns("s", value), "s"))
      assert.ok(isProblemOrUndefined(Options.subject("s", value), "s"))
      assert.ok(isProblemOrUndefined(Options.text("t", value), "t"))
      const parsed = Options.parseDuration("d", value)
      // A parsed duration is finite: no input slips through as infinite or NaN.
      if (Duration.isDuration(parsed)) assert.ok(Number.isFinite(Duration.toMillis(parsed)))
    }),
    { numRuns: 2000, seed: 15 }
  )
})

test("property: an accepted duration lies within the range, an accepted integer is an integer within it", () => {
  fc.assert(
    fc.property(anything, (value) => {
      if (Options.duration("d", value, { min: "100 millis", max: "1 days" }) === undefined && value !== undefined) {
        const millis = Duration.toMillis(Options.parseDuration("d", value) as Duration.Duration)
        assert.ok(millis >= 100 && millis <= 86_400_000, `${fc.stringify(value)} → ${millis} ms`)
      }
      if (Options.integer("n", value, { min: 1, max: 10 }) === undefined && value !== undefined) {
        assert.ok(Number.isInteger(value) && (value as number) >= 1 && (value as number) <= 10, fc.stringify(value))
      }
    }),
    { numRuns: 2000, seed: 15 }
  )
})
