// publishAll: many publishes with a bounded window of unacknowledged ones, one result per event, in input order.
import assert from "node:assert/strict"
import { test } from "node:test"
import { EventBus, MemoryTransport, PublishError, type PublishMiddleware } from "@cqbus/core"
import { runScoped } from "@cqbus/testkit"
import { PriceUpdatedEvent } from "@cqbus/testkit/events"
import { Effect, Fiber, Result } from "effect"
import { TestClock } from "effect/testing"

test("publishAll returns one result per event in input order; a failing event does not stop or hide the others", () =>
  runScoped(EventBus.layerMemory({ memory: { maxMessageSize: 40 } }), Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const memory = yield* MemoryTransport.MemoryTransport
    const prices = ["1", "2", "x".repeat(100), "4", "5"]
    const results = yield* bus.publishAll(PriceUpdatedEvent, prices.map((price) => ({ assetId: "a", price })), {
      window: 2,
      publish: (_, index) => ({ eventId: `evt-${index}` })
    })
    assert.equal(results.length, 5)
    assert.deepEqual(results.map((r) => Result.isSuccess(r)), [true, true, false, true, true])
    const failed = results[2]!
    assert.ok(Result.isFailure(failed) && failed.failure instanceof PublishError && failed.failure.reason === "TooLarge")
    assert.deepEqual((yield* memory.messages()).map((m) => m.eventId), ["evt-0", "evt-1", "evt-3", "evt-4"])
    const sequences = results.flatMap((r) => Result.isSuccess(r) ? [r.success.sequence] : [])
    assert.deepEqual(sequences, [1, 2, 3, 4])
  })))

test("publishAll keeps at most `window` publishes waiting for their acknowledgement", () => {
  let inFlight = 0
  let most = 0
  const slow: PublishMiddleware = (next) => (message) =>
    Effect.sync(() => {
      inFlight++
      most = Math.max(most, inFlight)
    }).pipe(
      Effect.andThen(Effect.sleep("10 millis")),
      Effect.andThen(next(message)),
      Effect.ensuring(Effect.sync(() => inFlight--))
    )
  return runScoped(EventBus.layerMemory({ publishMiddleware: [slow] }), Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const messages = Array.from({ length: 50 }, (_, i) => ({ assetId: "a", price: String(i) }))
    const fiber = yield* Effect.forkChild(bus.publishAll(PriceUpdatedEvent, messages, { window: 8 }))
    yield* TestClock.adjust("1 second")
    const results = yield* Fiber.join(fiber)
    assert.equal(results.filter((r) => Result.isSuccess(r)).length, 50)
    assert.equal(most, 8)
  }))
})
