import assert from "node:assert/strict"
import { test } from "node:test"
import { Cause, Duration, Exit } from "effect"
import { Backoff, Reject, RetryLater } from "../../src/index.ts"
import { decide } from "../../src/internal/process.ts"

const backoff = Backoff.constant("7 seconds")

test("success acks", () => {
  assert.deepEqual(decide(Exit.void, 1, 5, backoff), { _tag: "Ack" })
})

test("a failure naks with the backoff delay and names the error", () => {
  const outcome = decide(Exit.fail(new Error("db down")), 2, 5, backoff)
  assert.equal(outcome._tag, "Nak")
  assert.ok(outcome._tag === "Nak" && Duration.toMillis(outcome.delay) === 7000)
  assert.ok(outcome._tag === "Nak" && outcome.error === "Error: db down")
  assert.ok(outcome._tag === "Nak" && outcome.errorTag === "Error")
})

test("RetryLater naks with its own delay", () => {
  const outcome = decide(Exit.fail(new RetryLater({ delay: "250 millis" })), 1, 5, backoff)
  assert.ok(outcome._tag === "Nak" && Duration.toMillis(outcome.delay) === 250)
})

test("Reject dead-letters on any attempt", () => {
  assert.deepEqual(decide(Exit.fail(new Reject({ reason: "bad" })), 1, 5, backoff), {
    _tag: "DeadLetter",
    reason: "rejected: bad",
    errorTag: "Reject",
    attempts: 1
  })
})

test("the last allowed attempt dead-letters with the last error instead of naking", () => {
  const outcome = decide(Exit.fail({ _tag: "Boom", message: "exploded" }), 5, 5, backoff)
  assert.deepEqual(outcome, {
    _tag: "DeadLetter",
    reason: "gave up after 5 deliveries; last error Boom: exploded",
    errorTag: "Boom",
    attempts: 5
  })
  const later = decide(Exit.fail(new RetryLater({ delay: "1 second" })), 3, 3, backoff)
  assert.equal(later._tag, "DeadLetter")
})

test("a defect is retried like a failure and tagged Defect", () => {
  const outcome = decide(Exit.die(new TypeError("undefined is not a function")), 1, 5, backoff)
  assert.ok(outcome._tag === "Nak" && outcome.error === "Defect: undefined is not a function")
  assert.equal(decide(Exit.die("plain"), 5, 5, backoff)._tag, "DeadLetter")
})

test("a handler that interrupts itself is retried like a failure, so it cannot loop or escape maxDeliver", () => {
  const outcome = decide(Exit.failCause(Cause.interrupt()), 1, 5, backoff)
  assert.ok(outcome._tag === "Nak" && outcome.error === "Interrupted: the handler was interrupted")
  assert.equal(decide(Exit.failCause(Cause.interrupt()), 5, 5, backoff)._tag, "DeadLetter")
})
