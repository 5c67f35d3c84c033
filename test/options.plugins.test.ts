// The plugins validate their options in their constructors (`retry`, `recovery`, `logging`, `loggingPublish`,
// `metrics`, `metricsPublish`, `consumerLag`, `layerConsumerLag`, `prometheus`, `prometheusHandler`, `healthRouter`):
// a bad option throws a ConfigError naming it and its range where the plugin is written, instead of failing (or
// misbehaving on) every delivery later; each boundary value is accepted; and arbitrary values for the numeric and
// duration options either build the plugin or throw the ConfigError, nothing else (fast-check).
import { ConfigError, EventBus } from "@cqbus/core"
import { healthRouter } from "@cqbus/health"
import { logging, loggingPublish } from "@cqbus/logging"
import { consumerLag, layerConsumerLag, metrics, metricsPublish, prometheus, prometheusHandler } from "@cqbus/metrics"
import { recovery } from "@cqbus/recovery"
import { retry, type RetryOptions } from "@cqbus/retry"
import { Effect, ManagedRuntime, Redacted } from "effect"
import fc from "fast-check"
import assert from "node:assert/strict"
import { test } from "node:test"

/** Asserts that `make` throws a ConfigError for `option` whose message matches `text`. */
const throwsConfig = (make: () => unknown, option: string, text: RegExp): void =>
  assert.throws(make, (error: unknown) => {
    assert.ok(error instanceof ConfigError, `${option}: a ConfigError, got ${String(error)}`)
    assert.equal(error.option, option)
    assert.match(error.message, text)
    return true
  })

const bad = (value: unknown): never => value as never

test("options: retry and recovery throw a ConfigError naming a bad option; boundaries build", () => {
  throwsConfig(() => retry({ times: -1 }), "retry.times", /retry\.times must be an integer from 0 to 10000, got -1/)
  throwsConfig(() => retry({ times: NaN }), "retry.times", /got NaN/)
  throwsConfig(() => retry({ times: 10_001 }), "retry.times", /got 10001/)
  throwsConfig(() => retry({ initial: -5 }), "retry.initial", /retry\.initial must be a duration from 0 to 1d, got -5ms/)
  throwsConfig(() => retry({ initial: bad("1 sec") }), "retry.initial", /must be a duration .*got "1 sec"/)
  throwsConfig(() => retry({ max: "2 days" }), "retry.max", /from 0 to 1d, got "2 days"/)
  throwsConfig(() => retry({ maxElapsed: Infinity }), "retry.maxElapsed", /must be a duration .*got Infinity/)
  throwsConfig(() => retry({ factor: 0.5 }), "retry.factor", /retry\.factor must be a number from 1 to 100, got 0.5/)
  throwsConfig(() => retry({ jitter: bad("yes") }), "retry.jitter", /must be a number from 0 to 1, got "yes"/)
  throwsConfig(() => retry({ schedule: bad(5) }), "retry.schedule", /must be a Schedule, got 5/)
  throwsConfig(() => retry({ while: bad("Timeout") }), "retry.while", /must be a function/)
  throwsConfig(() => recovery({ log: bad("false") }), "recovery.log", /recovery\.log must be true or false, got "false"/)
  const boundaries: ReadonlyArray<RetryOptions> = [
    { times: 0, initial: 0, factor: 1, max: 0, jitter: 0 },
    { times: 10_000, initial: "1 days", factor: 100, max: "1 days", jitter: 1, maxElapsed: "1 days" }
  ]
  for (const options of boundaries) {
    assert.equal(typeof retry(options), "function")
  }
  assert.equal(typeof recovery({ log: false }), "function")
})

test("options: logging and loggingPublish refuse unknown outcomes, unknown levels and bad header lists", () => {
  throwsConfig(() => logging({ levels: bad({ succes: "Info" }) }), "logging.levels.succes", /is not an outcome; the outcomes are start, success/)
  throwsConfig(() => logging({ levels: bad({ success: "Loud" }) }), "logging.levels.success", /must be one of "Trace", .*"None", got "Loud"/)
  throwsConfig(() => logging({ headers: bad("traceparent") }), "logging.headers", /must be a list, got "traceparent"/)
  throwsConfig(() => logging({ headers: [""] }), "logging.headers[0]", /must be a string of 1 to 256 characters/)
  throwsConfig(() => logging({ logPayload: bad(1) }), "logging.logPayload", /must be true or false, got 1/)
  throwsConfig(() => logging({ describe: bad("json") }), "logging.describe", /must be a function/)
  throwsConfig(() => loggingPublish({ levels: bad({ start: "Info" }) }), "loggingPublish.levels.start", /the outcomes are success, failure, defect/)
  assert.equal(typeof logging({ levels: { start: "None", deadLetter: "Fatal" }, headers: ["traceparent"], logPayload: true }), "function")
  assert.equal(typeof loggingPublish({ levels: { failure: "Trace" } }), "function")
})

test("options: metrics refuse bad boundaries, attributes and intervals", () => {
  throwsConfig(() => metrics({ boundaries: [] }), "metrics.boundaries", /must be a non-empty list/)
  throwsConfig(() => metrics({ boundaries: [0.1, NaN] }), "metrics.boundaries[1]", /must be a number from .* got NaN/)
  throwsConfig(() => metrics({ boundaries: [0, 1] }), "metrics.boundaries[0]", /got 0/)
  throwsConfig(() => metricsPublish({ boundaries: [1, 0.5] }), "metricsPublish.boundaries[1]", /must be strictly increasing, got 0.5 after 1/)
  throwsConfig(() => metrics({ attributes: bad({ service: 5 }) }), "metrics.attributes.service", /must be a string/)
  throwsConfig(() => consumerLag({ attributes: bad("x") }), "consumerLag.attributes", /must be an object/)
  throwsConfig(() => layerConsumerLag({ interval: "1 millis" }), "layerConsumerLag.interval", /from 100ms to 1d, got "1 millis"/)
  throwsConfig(() => layerConsumerLag({ interval: -1 }), "layerConsumerLag.interval", /got -1ms/)
  throwsConfig(() => prometheus({ include: bad("cqbus") }), "prometheus.include", /must be a function/)
  throwsConfig(() => prometheusHandler({ runtime: bad({}) }), "prometheusHandler.runtime.runPromise", /must be a function/)
  throwsConfig(() => prometheusHandler({ consumerLag: bad(1) }), "prometheusHandler.consumerLag", /must be an object, got 1/)
  assert.equal(typeof metrics({ boundaries: [0.001, 1, 1_000_000], attributes: { service: "s" } }), "function")
  assert.equal(typeof layerConsumerLag({ interval: "100 millis" }), "object")
  assert.equal(typeof prometheusHandler({ consumerLag: false }), "function")
})

test("options: healthRouter refuses a bad timeout, backlog, heartbeat, check or secret (secrets never shown)", async () => {
  const runtime = ManagedRuntime.make(EventBus.layerMemory())
  try {
    throwsConfig(() => healthRouter({ runtime: bad(undefined) }), "healthRouter.runtime", /must be a ManagedRuntime or a Context/)
    throwsConfig(() => healthRouter({ runtime, timeout: 0 }), "healthRouter.timeout", /from 1ms to 1h, got 0/)
    throwsConfig(() => healthRouter({ runtime, timeout: "2 hours" }), "healthRouter.timeout", /from 1ms to 1h, got "2 hours"/)
    throwsConfig(() => healthRouter({ runtime, backlog: { warn: 0 } }), "healthRouter.backlog.warn", /must be an integer from 1 to/)
    throwsConfig(() => healthRouter({ runtime, backlog: { fail: NaN } }), "healthRouter.backlog.fail", /got NaN/)
    throwsConfig(() => healthRouter({ runtime, heartbeat: bad(true) }), "healthRouter.heartbeat", /must be one of "full", "ready", false, got true/)
    throwsConfig(
      () => healthRouter({ runtime, checks: [{ name: "db", run: Effect.void, timeout: -1 }] }),
      "healthRouter.checks[0].timeout",
      /from 1ms to 1h, got -1ms/
    )
    throwsConfig(() => healthRouter({ runtime, checks: [bad({ name: "db", run: () => 1 })] }), "healthRouter.checks[0].run", /must be an Effect/)
    const secret = "hunter2-very-secret"
    assert.throws(() => healthRouter({ runtime, secrets: [bad({ value: secret })] }), (error: unknown) =>
      error instanceof ConfigError && error.option === "healthRouter.secrets[0]" && !error.message.includes(secret))
    const app = healthRouter({
      runtime,
      timeout: "1 hours",
      backlog: { warn: 1, fail: Number.MAX_SAFE_INTEGER },
      heartbeat: false,
      checks: [{ name: "db", run: Effect.void, timeout: "1 millis" }],
      secrets: ["s", Redacted.make("r")]
    })
    assert.equal((await app.request("http://localhost/live")).status, 200)
  } finally {
    await runtime.dispose()
  }
})

const numberish = fc.oneof(
  { arbitrary: fc.constant(undefined), weight: 3 },
  { arbitrary: fc.integer({ min: 0, max: 50 }), weight: 3 },
  { arbitrary: fc.constantFrom("1 second", "100 millis", "1 days"), weight: 2 },
  { arbitrary: fc.double(), weight: 2 },
  { arbitrary: fc.constantFrom(NaN, Infinity, -Infinity, -1, 10_001, 1e9), weight: 1 },
  { arbitrary: fc.string({ maxLength: 10 }), weight: 1 },
  { arbitrary: fc.anything(), weight: 1 }
)

test("property: arbitrary retry, metrics and health options build the plugin or throw a ConfigError, nothing else", async () => {
  const runtime = ManagedRuntime.make(EventBus.layerMemory())
  const outcomes = { built: 0, refused: 0 }
  const attempt = (make: () => unknown): void => {
    try {
      make()
      outcomes.built++
    } catch (error) {
      assert.ok(error instanceof ConfigError, `only ConfigError is thrown, got ${String(error)}`)
      outcomes.refused++
    }
  }
  try {
    fc.assert(
      fc.property(numberish, numberish, numberish, numberish, (a, b, c, d) => {
        attempt(() => retry(bad({ times: a, initial: b, factor: c, max: d })))
        attempt(() => metrics(bad({ boundaries: [a, b].filter((x) => x !== undefined) })))
        attempt(() => layerConsumerLag(bad({ interval: c })))
        attempt(() => healthRouter(bad({ runtime, timeout: a, backlog: { warn: b, fail: c } })))
      }),
      { numRuns: 500, seed: 13 }
    )
  } finally {
    await runtime.dispose()
  }
  console.log(`options property (plugins): ${JSON.stringify(outcomes)}`)
  assert.ok(outcomes.built > 0 && outcomes.refused > 0, "the sample covers both outcomes")
})
