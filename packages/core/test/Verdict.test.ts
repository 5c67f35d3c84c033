import assert from "node:assert/strict"
import { test } from "node:test"
import { Cause, Duration, Effect, Exit } from "effect"
import { type Middleware, Reject, RetryLater, Verdict } from "../src/index.ts"

const at = (attempt: number, maxDeliver = 5) => ({ attempt, maxDeliver })

test("Verdict.of: success acks with one shared value, so a successful delivery allocates nothing", () => {
  const first = Verdict.of(Exit.void, at(1))
  assert.deepEqual(first, { kind: "ack", ending: "success" })
  assert.equal(Verdict.of(Exit.succeed(42), at(5)), first)
})

test("Verdict.of: failures retry before the last attempt and dead-letter on it; Reject dead-letters at once", () => {
  const busy = Exit.fail({ _tag: "Busy", message: "try again" })
  assert.deepEqual(Verdict.of(busy, at(4)), {
    kind: "retry",
    ending: "failure",
    errorTag: "Busy",
    error: { _tag: "Busy", message: "try again" },
    reason: "Busy: try again",
    delay: undefined
  })
  const last = Verdict.of(busy, at(5))
  assert.ok(last.kind === "dead_letter" && last.reason === "gave up after 5 deliveries; last error Busy: try again")
  const rejected = Verdict.of(Exit.fail(new Reject({ reason: "bad" })), at(1))
  assert.ok(rejected.kind === "dead_letter" && rejected.errorTag === "Reject" && rejected.reason === "rejected: bad")
  const later = Verdict.of(Exit.fail(new RetryLater({ delay: "3 seconds" })), at(1))
  assert.ok(later.kind === "retry" && later.delay !== undefined && Duration.toMillis(later.delay) === 3000)
  const died = Verdict.classify(Exit.die(new TypeError("bug")), 1, 1)
  assert.ok(died.kind === "dead_letter" && died.ending === "defect" && died.errorTag === "Defect")
  const interrupted = Verdict.classify(Exit.failCause(Cause.interrupt()), 2, 5)
  assert.ok(interrupted.kind === "retry" && interrupted.ending === "interrupt" && interrupted.errorTag === "Interrupted")
})

test("Verdict.markReported marks the very delivery object, and isReported reads it", () => {
  const delivery = { topic: "t", eventId: "e" } as never
  assert.equal(Verdict.isReported(delivery), false)
  Verdict.markReported(delivery)
  assert.equal(Verdict.isReported(delivery), true)
})

test("the @example of Verdict.of compiles and runs", async () => {
  const deadLetters: Middleware = (handler) => (event, delivery) =>
    handler(event, delivery).pipe(
      Effect.onExit((exit) => {
        const verdict = Verdict.of(exit, delivery)
        return verdict.kind === "dead_letter" ? Effect.logError(`dead letter: ${verdict.reason}`) : Effect.void
      })
    )
  const handler = deadLetters((_: string) => Effect.void)
  await Effect.runPromise(handler("x", { attempt: 1, maxDeliver: 1 } as never))
})
