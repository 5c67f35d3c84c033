import assert from "node:assert/strict"
import { test } from "node:test"
import { Backoff, type Delivery, EventBus, MemoryTransport, Reject, RetryLater } from "@cqbus/core"
import { retry } from "@cqbus/retry"
import { runScoped, testDelivery, waitUntil } from "@cqbus/testkit"
import { AssetCreatedEvent } from "@cqbus/testkit/events"
import { Effect, Fiber, pipe } from "effect"
import { TestClock } from "effect/testing"

const delivery = testDelivery()

/** A handler that fails its first `failures` runs, recording the virtual time of each run. */
const flaky = (failures: number, error: unknown = new Error("transient")) => {
  const at: Array<number> = []
  const handler = (_: string) =>
    Effect.clockWith((clock) => {
      at.push(clock.currentTimeMillisUnsafe())
      return at.length <= failures ? Effect.fail(error) : Effect.void
    })
  return { at, handler }
}

const virtual = <A, E>(effect: Effect.Effect<A, E>) => Effect.runPromise(Effect.provide(effect, TestClock.layer()))

test("retry({ times: 3, initial: \"1 second\", factor: 1 }) retries with a fixed delay on the TestClock, then succeeds", () =>
  virtual(Effect.gen(function*() {
    const { at, handler } = flaky(2)
    const fiber = yield* Effect.forkChild(retry({ times: 3, initial: "1 second", factor: 1, jitter: 0 })(handler)("x", delivery))
    yield* TestClock.adjust("999 millis")
    assert.equal(at.length, 1, "no retry before the delay")
    yield* TestClock.adjust("1 millis")
    assert.equal(at.length, 2)
    yield* TestClock.adjust("1 second")
    yield* Fiber.join(fiber)
    assert.deepEqual(at, [0, 1000, 2000])
  })))

test("the default backoff is exponential and capped by max", () =>
  virtual(Effect.gen(function*() {
    const { at, handler } = flaky(5)
    const fiber = yield* Effect.forkChild(
      retry({ times: 5, initial: "100 millis", max: "300 millis", jitter: 0 })(handler)("x", delivery)
    )
    yield* TestClock.adjust("10 seconds")
    yield* Fiber.join(fiber)
    const gaps = at.slice(1).map((t, i) => t - at[i]!)
    assert.deepEqual(gaps, [100, 200, 300, 300, 300])
  })))

test("the default jitter spreads the delays below the nominal one", () =>
  virtual(Effect.gen(function*() {
    const gaps: Array<number> = []
    for (let run = 0; run < 20; run++) {
      const { at, handler } = flaky(1)
      const fiber = yield* Effect.forkChild(retry({ times: 1, initial: "1 second" })(handler)("x", delivery))
      yield* TestClock.adjust("2 seconds")
      yield* Fiber.join(fiber)
      gaps.push(at[1]! - at[0]!)
    }
    assert.ok(gaps.every((g) => g >= 800 && g <= 1000), `between 80 % and 100 % of the delay: ${gaps.join(", ")}`)
    assert.ok(new Set(gaps).size > 1, "not all the same")
  })))

test("when the retries are used up the last failure is passed on", () =>
  virtual(Effect.gen(function*() {
    const { at, handler } = flaky(10, new Error("still down"))
    const fiber = yield* Effect.forkChild(Effect.flip(retry({ times: 2, initial: "10 millis" })(handler)("x", delivery)))
    yield* TestClock.adjust("1 second")
    const error = yield* Fiber.join(fiber)
    assert.equal(at.length, 3)
    assert.ok(error instanceof Error && error.message === "still down")
  })))

test("maxElapsed schedules no retry once the time since the first run has passed it", () =>
  virtual(Effect.gen(function*() {
    const { at, handler } = flaky(100)
    const fiber = yield* Effect.forkChild(
      Effect.flip(retry({ times: 100, initial: "1 second", factor: 1, jitter: 0, maxElapsed: "3500 millis" })(handler)("x", delivery))
    )
    yield* TestClock.adjust("1 minute")
    yield* Fiber.join(fiber)
    // The retry at 4000 was scheduled at 3000, inside the budget; at 4000 the budget is spent.
    assert.deepEqual(at, [0, 1000, 2000, 3000, 4000])
  })))

test("Reject, RetryLater and errors the predicate refuses are not retried", () =>
  virtual(Effect.gen(function*() {
    for (const error of [new Reject({ reason: "no" }), new RetryLater({ delay: "1 minute" }), { _tag: "Fatal" }]) {
      const { at, handler } = flaky(10, error)
      const wrapped = retry({ times: 5, initial: "1 millis", while: (e) => (e as { _tag?: string })._tag !== "Fatal" })(handler)
      const fiber = yield* Effect.forkChild(Effect.flip(wrapped("x", delivery)))
      yield* TestClock.adjust("1 second")
      assert.equal(yield* Fiber.join(fiber), error)
      assert.equal(at.length, 1, `${(error as { _tag: string })._tag} ran once`)
    }
  })))

test("on a bus: in-process retries run first, then the transport redelivers, and Reject dead-letters at once", () =>
  runScoped(EventBus.layerMemory(), Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const memory = yield* MemoryTransport.MemoryTransport
    const seen: Array<string> = []
    let flakyRuns = 0
    const handler = pipe(
      (e: { readonly assetId: string }, d: Delivery) =>
        Effect.suspend(() => {
          seen.push(`${e.assetId}@${d.attempt}`)
          if (e.assetId === "bad") return Effect.fail(new Reject({ reason: "bad" }))
          return ++flakyRuns <= 3 ? Effect.fail(new Error("down")) : Effect.void
        }),
      retry({ times: 1, initial: "10 millis" })
    )
    yield* bus.subscribe(AssetCreatedEvent, handler, { group: "retrying", backoff: Backoff.constant("1 second") })
    yield* bus.publish(AssetCreatedEvent, { assetId: "flaky" })
    yield* bus.publish(AssetCreatedEvent, { assetId: "bad" })
    yield* waitUntil(() => flakyRuns === 4, "flaky succeeds on its fourth run")
    // Each delivery runs twice (the run and one in-process retry); the transport redelivers in between.
    assert.deepEqual(seen.filter((s) => s.startsWith("flaky")), ["flaky@1", "flaky@1", "flaky@2", "flaky@2"])
    assert.deepEqual(seen.filter((s) => s.startsWith("bad")), ["bad@1"], "Reject is neither retried nor redelivered")
    assert.equal((yield* memory.deadLetters).length, 1)
  })))
