import assert from "node:assert/strict"
import { test } from "node:test"
import { testDelivery } from "@cqbus/testkit"
import { Duration, Effect, Exit, Fiber } from "effect"
import { TestClock } from "effect/testing"
import { HandlerTimeout, onError, Reject, RetryLater, timeout } from "../src/index.ts"

const delivery = testDelivery()

const runVirtual = <A, E>(effect: Effect.Effect<A, E>) => Effect.runPromise(Effect.provide(effect, TestClock.layer()))

test("timeout fails a slow handler with HandlerTimeout once its budget has passed, in virtual time", () =>
  runVirtual(Effect.gen(function*() {
    let finished = false
    const slow = (_: string) => Effect.andThen(Effect.sleep("10 seconds"), Effect.sync(() => (finished = true)))
    const fiber = yield* Effect.forkChild(Effect.exit(timeout("2 seconds")(slow)("x", delivery)))
    yield* TestClock.adjust("1999 millis")
    assert.equal(fiber.pollUnsafe(), undefined, "still running before the budget ends")
    yield* TestClock.adjust("2 millis")
    const exit = yield* Fiber.join(fiber)
    assert.ok(Exit.isFailure(exit))
    const error = exit.cause.reasons[0]
    assert.ok(error !== undefined && error._tag === "Fail" && error.error instanceof HandlerTimeout)
    assert.match(error.error.message, /cqc\.events\.v1\.test timed out after 2s/)
    assert.equal(finished, false, "the slow handler was interrupted")
  })))

test("timeout lets a handler that finishes in time succeed", () =>
  runVirtual(Effect.gen(function*() {
    const quick = (_: string) => Effect.sleep("1 second")
    const fiber = yield* Effect.forkChild(timeout("2 seconds")(quick)("x", delivery))
    yield* TestClock.adjust("1 second")
    yield* Fiber.join(fiber)
  })))

test("onError sees each failure and passes it on unchanged", async () => {
  const seen: Array<unknown> = []
  const failing = (_: string) => Effect.fail(new Reject({ reason: "no" }))
  const wrapped = onError((error) => Effect.sync(() => seen.push(error)))(failing)
  const error = await Effect.runPromise(Effect.flip(wrapped("x", delivery)))
  assert.ok(error instanceof Reject)
  assert.equal(seen.length, 1)
  assert.equal(seen[0], error)
  const fine = onError(() => Effect.sync(() => seen.push("never")))((_: string) => Effect.void)
  await Effect.runPromise(fine("x", delivery))
  assert.equal(seen.length, 1)
})

test("outcome errors carry readable messages", () => {
  assert.equal(new Reject({ reason: "negative price" }).message, "rejected: negative price")
  assert.equal(new Reject({ reason: "x" })._tag, "Reject")
  assert.equal(new RetryLater({ delay: "5 seconds", reason: "rate limited" }).message, "retry later (5s): rate limited")
  assert.equal(new RetryLater({ delay: Duration.millis(250) }).message, "retry later (250ms)")
})
