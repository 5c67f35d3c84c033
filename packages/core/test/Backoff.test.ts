import assert from "node:assert/strict"
import { test } from "node:test"
import { Duration } from "effect"
import { Backoff } from "../src/index.ts"

test("exponential backoff doubles from its initial delay and stops at its cap", () => {
  const backoff = Backoff.exponential({ initial: "100 millis", factor: 2, max: "1 second" })
  assert.deepEqual([1, 2, 3, 4, 5, 10].map((n) => Duration.toMillis(backoff(n))), [100, 200, 400, 800, 1000, 1000])
})

test("jitter keeps each delay within [delay * (1 - jitter), delay]", () => {
  const backoff = Backoff.exponential({ initial: "1 second", jitter: 0.5 })
  const delays = Array.from({ length: 200 }, () => Duration.toMillis(backoff(1)))
  assert.ok(delays.every((d) => d >= 500 && d <= 1000))
  assert.ok(new Set(delays).size > 10, "jitter varies the delay")
})

test("constant backoff waits the same after every failure", () => {
  const backoff = Backoff.constant("3 seconds")
  assert.deepEqual([1, 5, 50].map((n) => Duration.toMillis(backoff(n))), [3000, 3000, 3000])
})

test("checkExponential is the one check of the backoff options, naming a bad one under the caller's prefix", () => {
  assert.equal(Backoff.checkExponential("retry", { jitter: 2 })?.option, "retry.jitter")
  assert.equal(Backoff.checkExponential("backoff", { max: "2 days" })?.option, "backoff.max")
  assert.equal(Backoff.checkExponential("retry", { initial: 0, factor: 100, max: "1 days", jitter: 1 }), undefined)
})
