// The memory transport's optional `Transport` capabilities that health checks and lag gauges read: `consumers`
// (pending / ack-pending / redelivered per live consumer) and `draining`; and subscriptions made inside a layer
// (how the heartbeat and background readers subscribe). Virtual time throughout.
import assert from "node:assert/strict"
import { test } from "node:test"
import { Backoff, type ConsumerLag, EventBus, MemoryTransport, Transport } from "@cqbus/core"
import { letTimePass, runScoped } from "@cqbus/testkit"
import { AssetCreatedEvent } from "@cqbus/testkit/events"
import { Duration, Effect, Exit, Fiber, Latch, Layer, ManagedRuntime, Scope } from "effect"
import { TestClock } from "effect/testing"

const withBus = <A, E>(program: Effect.Effect<A, E, EventBus.EventBus | Transport.Transport | Scope.Scope>) =>
  runScoped(EventBus.layerMemory(), program)

/** The transport's consumer list, which every memory transport has. */
const lags = Effect.flatMap(Effect.service(Transport.Transport), (t) => t.consumers!)

const pick = ({ ackPending, pending, redelivered }: ConsumerLag) => ({ pending, ackPending, redelivered })

/** A lag without its `oldestUnackedAge` (a Duration that depends on how long handlers ran), checked on its own. */
const withoutAge = ({ oldestUnackedAge: _, ...rest }: ConsumerLag): ConsumerLag => rest

const lagOf = (all: ReadonlyArray<ConsumerLag>, consumer: string): ConsumerLag => {
  const found = all.find((lag) => lag.consumer === consumer)
  assert.ok(found !== undefined, `consumer ${consumer} is listed: ${JSON.stringify(all)}`)
  return found
}

test("memory consumers: pending, ackPending and redelivered follow a group's deliveries, failures and backoff", () =>
  withBus(Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const transport = yield* Transport.Transport
    assert.deepEqual(yield* transport.consumers!, [], "no subscription, no consumer")
    for (let i = 1; i <= 5; i++) yield* bus.publish(AssetCreatedEvent, { assetId: `a${i}` }, { eventId: `e${i}` })
    const gate = yield* Latch.make(false)
    let current: ReadonlyArray<ConsumerLag> = []
    const refresh = Effect.map(lags, (all) => (current = all))
    yield* bus.subscribe(AssetCreatedEvent, (_, delivery) =>
      Effect.andThen(gate.await, delivery.eventId === "e1" && delivery.attempt === 1 ? Effect.fail("transient") : Effect.void), {
      group: "lag",
      concurrency: 2,
      backoff: Backoff.constant("1 minute")
    })
    yield* letTimePass(50)
    yield* refresh
    assert.deepEqual(withoutAge(lagOf(current, "lag")), {
      topic: AssetCreatedEvent.topic,
      group: "lag",
      consumer: "lag",
      pending: 3,
      ackPending: 2,
      redelivered: 0,
      draining: false
    }, "two running, three not yet delivered")
    assert.equal(Duration.toMillis(lagOf(current, "lag").oldestUnackedAge!), 50, "running since the subscription started")

    yield* gate.open
    // Every message but e1 is acked; e1 failed once and waits a minute for its redelivery.
    yield* letTimePass(50)
    yield* refresh
    assert.deepEqual(pick(lagOf(current, "lag")), { pending: 0, ackPending: 0, redelivered: 1 }, "only e1 waits")
    yield* TestClock.adjust("1 minute")
    yield* letTimePass(50)
    yield* refresh
    assert.deepEqual(lagOf(current, "lag"), {
      topic: AssetCreatedEvent.topic,
      group: "lag",
      consumer: "lag",
      pending: 0,
      ackPending: 0,
      redelivered: 0,
      draining: false,
      oldestUnackedAge: Duration.zero
    })
  })))

test("memory consumers: only live consumers are listed; an ephemeral one has no group; new messages count as pending", () =>
  withBus(Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    yield* Effect.scoped(Effect.gen(function*() {
      yield* bus.subscribe(AssetCreatedEvent, () => Effect.never, { group: "stuck", concurrency: 1, drainTimeout: 0 })
      yield* bus.subscribe(AssetCreatedEvent, () => Effect.never, { concurrency: 1, drainTimeout: 0 })
      for (let i = 0; i < 4; i++) yield* bus.publish(AssetCreatedEvent, { assetId: `b${i}` })
      yield* letTimePass(20)
      const all = yield* lags
      assert.equal(all.length, 2)
      const ephemeral = all.find((lag) => lag.group === undefined)
      assert.ok(ephemeral !== undefined && ephemeral.consumer.startsWith("~ephemeral-"), JSON.stringify(all))
      for (const lag of all) {
        assert.deepEqual([lag.pending, lag.ackPending, lag.redelivered], [3, 1, 0], `${lag.consumer}: ${JSON.stringify(lag)}`)
      }
    }))
    // The durable group outlives its scope (with its handed-back message), but it has no member here any more.
    assert.deepEqual(yield* lags, [])
  })))

test("memory draining: true while a subscription drains (and on its consumer), false after, true once the transport closes", () =>
  runScoped(
    EventBus.layerMemory(),
    Effect.gen(function*() {
      const bus = yield* EventBus.EventBus
      const transport = yield* Transport.Transport
      assert.equal(yield* transport.draining!, false)
      const scope = yield* Scope.make()
      yield* bus.subscribe(AssetCreatedEvent, () => Effect.never, { group: "slow", drainTimeout: "5 seconds" }).pipe(
        Scope.provide(scope)
      )
      yield* bus.publish(AssetCreatedEvent, { assetId: "x" })
      yield* letTimePass(20)
      assert.equal(yield* transport.draining!, false, "running is not draining")
      const closing = yield* Effect.forkChild(Scope.close(scope, Exit.void))
      yield* letTimePass(1_000)
      assert.equal(yield* transport.draining!, true, "the handler is still running inside its drain timeout")
      assert.equal(lagOf(yield* transport.consumers!, "slow").draining, true)
      yield* letTimePass(4_500)
      yield* Fiber.join(closing)
      assert.equal(yield* transport.draining!, false, "the drain is over")

      // An ephemeral subscription draining (often short-lived) is shown on its consumer, not as the transport's drain.
      const short = yield* Scope.make()
      yield* bus.subscribe(AssetCreatedEvent, () => Effect.never, { drainTimeout: "5 seconds" }).pipe(Scope.provide(short))
      yield* bus.publish(AssetCreatedEvent, { assetId: "y" })
      yield* letTimePass(20)
      const closingShort = yield* Effect.forkChild(Scope.close(short, Exit.void))
      yield* letTimePass(1_000)
      assert.deepEqual((yield* transport.consumers!).map((c) => [c.group, c.draining]), [[undefined, true]])
      assert.equal(yield* transport.draining!, false, "an ephemeral subscription's drain is not the service's")
      yield* letTimePass(4_500)
      yield* Fiber.join(closingShort)

      const own = yield* Scope.make()
      const second = yield* MemoryTransport.make().pipe(Scope.provide(own))
      assert.equal(yield* second.draining!, false)
      yield* Scope.close(own, Exit.void)
      assert.equal(yield* second.draining!, true, "a closed transport is draining for good")
    })
  ))

test("memory: a subscription made while building a layer keeps delivering after the layer is built", async () => {
  let seen = 0
  const subscriber = Layer.effectDiscard(Effect.flatMap(Effect.service(EventBus.EventBus), (bus) =>
    bus.subscribeRaw("cqc.events.v1.layered", () => Effect.sync(() => void seen++))))
  const runtime = ManagedRuntime.make(subscriber.pipe(Layer.provideMerge(EventBus.layerMemory())))
  try {
    await runtime.runPromise(Effect.gen(function*() {
      const bus = yield* EventBus.EventBus
      for (let i = 0; i < 3; i++) yield* bus.publishRaw("cqc.events.v1.layered", new Uint8Array([i]))
      yield* Effect.sleep("50 millis")
    }))
    assert.equal(seen, 3)
  } finally {
    await runtime.dispose()
  }
})
