// Memory-transport specifics beyond the conformance suite: retention limits, discard policies, size limits, the
// dedupe window, the inspection service, ackPolicy "none" and the exact pace of replay "original". Virtual time
// throughout.
import assert from "node:assert/strict"
import { test } from "node:test"
import {
  EventBus,
  MemoryTransport,
  type MemoryTransportOptions,
  PublishError,
  Reject,
  RetryLater,
  SubscribeError
} from "@cqbus/core"
import { captureLogs, letTimePass, runScoped, waitUntil } from "@cqbus/testkit"
import { AssetCreatedEvent, PriceUpdatedEvent } from "@cqbus/testkit/events"
import { Deferred, Effect, Exit, Scope } from "effect"
import { TestClock } from "effect/testing"

const withMemory = <A, E>(
  memory: MemoryTransportOptions,
  program: Effect.Effect<A, E, EventBus.EventBus | MemoryTransport.MemoryTransport | import("effect").Scope.Scope>
) => runScoped(EventBus.layerMemory({ memory }), program)

const ids = (messages: ReadonlyArray<{ readonly eventId: string }>) => messages.map((m) => m.eventId)

test("memory: maxMessagesPerTopic evicts the oldest messages of that topic only", () =>
  withMemory({ maxMessagesPerTopic: 3 }, Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const memory = yield* MemoryTransport.MemoryTransport
    for (let i = 0; i < 5; i++) yield* bus.publish(AssetCreatedEvent, { assetId: `a${i}` }, { eventId: `a${i}` })
    yield* bus.publish(PriceUpdatedEvent, { assetId: "p" }, { eventId: "p0" })
    assert.deepEqual(ids(yield* memory.messages(AssetCreatedEvent.topic)), ["a2", "a3", "a4"])
    assert.deepEqual(ids(yield* memory.messages(PriceUpdatedEvent.topic)), ["p0"])
    assert.deepEqual(ids(yield* memory.messages()), ["a2", "a3", "a4", "p0"])
  })))

test("memory: maxBytesPerTopic evicts by size", () =>
  withMemory({ maxBytesPerTopic: 25 }, Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const memory = yield* MemoryTransport.MemoryTransport
    for (let i = 0; i < 4; i++) yield* bus.publishRaw("cqc.events.v1.blob", new Uint8Array(10), { eventId: `b${i}` })
    assert.deepEqual(ids(yield* memory.messages()), ["b2", "b3"])
  })))

test("memory: maxAge removes messages once they are older than the limit (TestClock)", () =>
  withMemory({ maxAge: "1 minute" }, Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const memory = yield* MemoryTransport.MemoryTransport
    yield* bus.publish(AssetCreatedEvent, { assetId: "old" }, { eventId: "old" })
    yield* TestClock.adjust("45 seconds")
    yield* bus.publish(AssetCreatedEvent, { assetId: "new" }, { eventId: "new" })
    assert.deepEqual(ids(yield* memory.messages()), ["old", "new"])
    yield* TestClock.adjust("20 seconds")
    assert.deepEqual(ids(yield* memory.messages()), ["new"])
    const seen: Array<string> = []
    yield* bus.subscribe(AssetCreatedEvent, (e) => Effect.sync(() => seen.push(e.assetId)), { group: "aged" })
    yield* waitUntil(() => seen.length === 1, "the surviving message is delivered")
    assert.deepEqual(seen, ["new"])
  })))

test("memory: discard \"new\" rejects publishes to a full topic with a retriable StreamFull and keeps the old ones", () =>
  withMemory({ maxMessagesPerTopic: 2, discard: "new" }, Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const memory = yield* MemoryTransport.MemoryTransport
    yield* bus.publish(AssetCreatedEvent, { assetId: "1" }, { eventId: "1" })
    yield* bus.publish(AssetCreatedEvent, { assetId: "2" }, { eventId: "2" })
    const error = yield* Effect.flip(bus.publish(AssetCreatedEvent, { assetId: "3" }, { eventId: "3" }))
    assert.ok(error instanceof PublishError)
    assert.equal(error.reason, "StreamFull")
    assert.equal(error.retriable, true)
    assert.match(error.message, /cqc\.events\.v1\.asset_created is full/)
    assert.deepEqual(ids(yield* memory.messages()), ["1", "2"])
  })))

test("memory: a message over maxMessageSize fails with TooLarge, not retriable", () =>
  withMemory({ maxMessageSize: 100 }, Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const error = yield* Effect.flip(bus.publishRaw("cqc.events.v1.big", new Uint8Array(101)))
    assert.ok(error instanceof PublishError)
    assert.equal(error.reason, "TooLarge")
    assert.equal(error.retriable, false)
    assert.match(error.message, /101 bytes; the largest accepted is 100 bytes/)
    yield* bus.publishRaw("cqc.events.v1.big", new Uint8Array(100))
  })))

test("memory: an event id is deduplicated inside the window and accepted again after it", () =>
  withMemory({ duplicateWindow: "2 minutes" }, Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const first = yield* bus.publish(AssetCreatedEvent, { assetId: "x" }, { eventId: "dup" })
    yield* TestClock.adjust("119 seconds")
    assert.equal((yield* bus.publish(AssetCreatedEvent, { assetId: "x" }, { eventId: "dup" })).duplicate, true)
    yield* TestClock.adjust("2 seconds")
    const later = yield* bus.publish(AssetCreatedEvent, { assetId: "x" }, { eventId: "dup" })
    assert.equal(later.duplicate, false)
    assert.ok(later.sequence > first.sequence)
  })))

test("memory: one group cannot consume two different topics", () =>
  withMemory({}, Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    yield* bus.subscribe(AssetCreatedEvent, () => Effect.void, { group: "one" })
    const error = yield* Effect.flip(bus.subscribe(PriceUpdatedEvent, () => Effect.void, { group: "one" }))
    assert.ok(error instanceof SubscribeError)
    assert.equal(error.reason, "GroupConflict")
    assert.match(error.message, /group one already consumes cqc\.events\.v1\.asset_created/)
  })))

test("memory: groups reports members, in-flight and pending counts; ephemeral groups vanish with their scope", () =>
  withMemory({}, Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const memory = yield* MemoryTransport.MemoryTransport
    for (let i = 0; i < 3; i++) yield* bus.publish(AssetCreatedEvent, { assetId: `g${i}` })
    yield* Effect.scoped(Effect.gen(function*() {
      yield* bus.subscribe(AssetCreatedEvent, () => Effect.never, { group: "busy", concurrency: 2, drainTimeout: 0 })
      yield* bus.subscribe(AssetCreatedEvent, () => Effect.void)
      yield* letTimePass(100)
      const groups = yield* memory.groups
      const busy = groups.find((g) => g.consumer === "busy")!
      assert.deepEqual({ members: busy.members, inFlight: busy.ackPending, pending: busy.pending, durable: busy.group !== undefined },
        { members: 1, inFlight: 2, pending: 1, durable: true })
      assert.equal(groups.filter((g) => g.group === undefined).length, 1)
    }).pipe(Effect.provideService(EventBus.EventBus, bus)))
    const after = yield* memory.groups
    assert.deepEqual(after.map((g) => [g.consumer, g.members, g.redelivered]), [["busy", 0, 2]],
      "the durable group stays with its 2 handed-back messages; the ephemeral one is gone")
  })))

test("memory: subscribe refuses invalid options with a SubscribeError naming the option", () =>
  withMemory({}, Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    for (const [options, text] of [
      [{ concurrency: 0 }, /concurrency must be an integer from 1 to 10000, got 0/],
      [{ maxDeliver: 1.5 }, /maxDeliver must be an integer from 1 to 10000, got 1.5/],
      [{ group: "" }, /group must be a name of 1 to 255 characters/],
      [{ group: "a b" }, /without whitespace, control characters, "\.", "\*", ">", "\/" or "\\"/]
    ] as const) {
      const error = yield* Effect.flip(bus.subscribe(AssetCreatedEvent, () => Effect.void, options))
      assert.ok(error instanceof SubscribeError && error.reason === "InvalidOptions")
      assert.match(error.message, text)
    }
  })))

test("memory: with ordering by key, deliveries in flight stay within maxBuffered while a key is parked", () =>
  withMemory({}, Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const memory = yield* MemoryTransport.MemoryTransport
    yield* bus.subscribe(PriceUpdatedEvent, () => Effect.never, {
      group: "bounded",
      drainTimeout: 0,
      ordering: "key",
      concurrency: 1,
      maxBuffered: 5
    })
    for (let i = 0; i < 50; i++) yield* bus.publish(PriceUpdatedEvent, { assetId: "hot", price: String(i) })
    yield* letTimePass(100)
    const group = (yield* memory.groups).find((g) => g.consumer === "bounded")!
    assert.equal(group.ackPending, 5, "the transport stops handing out deliveries at the buffer bound")
    assert.equal(group.pending, 45, "the rest waits in the log, not in memory queues")
  })))

test("memory: deliveries handed back at drain come back first and in publish order", () =>
  withMemory({}, Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    for (let i = 0; i < 5; i++) yield* bus.publish(AssetCreatedEvent, { assetId: `h${i}` })
    yield* Effect.scoped(Effect.gen(function*() {
      yield* bus.subscribe(AssetCreatedEvent, () => Effect.never, { group: "handback", concurrency: 3, drainTimeout: 0 })
      yield* letTimePass(50)
    }))
    const seen: Array<string> = []
    yield* bus.subscribe(AssetCreatedEvent, (e, d) => Effect.sync(() => seen.push(`${e.assetId}@${d.attempt}`)), {
      group: "handback",
      concurrency: 1
    })
    yield* waitUntil(() => seen.length === 5, "all five events are delivered again")
    assert.deepEqual(seen, ["h0@2", "h1@2", "h2@2", "h3@1", "h4@1"])
  })))

test("memory: a member whose handlers are all busy is skipped; the other members of its group take the rest", () =>
  withMemory({}, Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const memory = yield* MemoryTransport.MemoryTransport
    let stuck = 0
    const done: Array<string> = []
    yield* bus.subscribe(AssetCreatedEvent, () => Effect.andThen(Effect.sync(() => stuck++), Effect.never), {
      group: "busy",
      concurrency: 2,
      drainTimeout: 0
    })
    yield* bus.subscribe(AssetCreatedEvent, (e) => Effect.sync(() => done.push(e.assetId)), { group: "busy", concurrency: 2 })
    for (let i = 0; i < 10; i++) yield* bus.publish(AssetCreatedEvent, { assetId: `b${i}` })
    yield* waitUntil(() => stuck + done.length === 10, "every event is started by one member or the other")
    yield* letTimePass(50)
    assert.equal(stuck, 2, "the busy member holds no more than its 2 handlers")
    assert.equal(done.length, 8, "the other member handles the rest")
    const group = (yield* memory.groups).find((g) => g.consumer === "busy")!
    assert.equal(group.ackPending, 2)
    assert.equal(group.pending, 0)
  })))

test("memory: what a closing member was handed but had not started goes to the other member as a first delivery", () =>
  withMemory({}, Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const memory = yield* MemoryTransport.MemoryTransport
    const seen: Array<string> = []
    const record = (e: { readonly assetId: string }, d: { readonly attempt: number }) =>
      Effect.sync(() => seen.push(`${e.assetId}@${d.attempt}`))
    const leaving = yield* Scope.make()
    yield* bus.subscribe(AssetCreatedEvent, record, { group: "leaver" }).pipe(Scope.provide(leaving))
    yield* bus.subscribe(AssetCreatedEvent, record, { group: "leaver" })
    // Published and closed without a yield in between: the group has handed half of them to the first member, whose
    // loop never got to start them.
    for (let i = 0; i < 10; i++) yield* bus.publish(AssetCreatedEvent, { assetId: `l${i}` })
    yield* Scope.close(leaving, Exit.void)
    yield* waitUntil(() => seen.length >= 10, "the remaining member handles all 10 events")
    yield* letTimePass(50)
    assert.deepEqual([...seen].sort(), Array.from({ length: 10 }, (_, i) => `l${i}@1`).sort(),
      "each event once, as a first delivery")
    const group = (yield* memory.groups).find((g) => g.consumer === "leaver")!
    assert.equal(group.members, 1)
    assert.equal(group.ackPending, 0)
    assert.equal(group.redelivered, 0)
  })))

test("memory: closing a subscription stops pulling at once; the group's next member gets the rest exactly once", () =>
  withMemory({}, Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const total = 20_000
    for (let i = 0; i < total; i++) yield* bus.publish(AssetCreatedEvent, { assetId: `s${i}` })
    const seen: Array<string> = []
    const handler = (e: { readonly assetId: string }) => Effect.sync(() => seen.push(e.assetId))
    let beforeClose = 0
    yield* Effect.scoped(Effect.gen(function*() {
      yield* bus.subscribe(AssetCreatedEvent, handler, { group: "stopper", concurrency: 4 })
      yield* waitUntil(() => seen.length >= 10, "some events are handled")
      beforeClose = seen.length
    }))
    const atClose = seen.length
    assert.ok(atClose < total, "the backlog was not worked off before closing")
    assert.ok(atClose - beforeClose <= 4, `only the 4 in-flight handlers finished while closing (${atClose - beforeClose})`)
    yield* letTimePass(50)
    assert.equal(seen.length, atClose, "nothing is handled after the scope closed")
    yield* bus.subscribe(AssetCreatedEvent, handler, { group: "stopper", concurrency: 4 })
    yield* waitUntil(() => seen.length >= total, "the rest is handled by the next member")
    yield* letTimePass(50)
    assert.equal(seen.length, total)
    assert.equal(new Set(seen).size, total, "no event handled twice")
  })))

test("memory: a message that keeps being handed back mid-handler is dead-lettered once it exceeds maxDeliver", () =>
  withMemory({}, Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const memory = yield* MemoryTransport.MemoryTransport
    yield* bus.publish(AssetCreatedEvent, { assetId: "crashes-consumers" })
    let runs = 0
    for (let round = 0; round < 3; round++) {
      yield* Effect.scoped(Effect.gen(function*() {
        yield* bus.subscribe(AssetCreatedEvent, () => Effect.andThen(Effect.sync(() => runs++), Effect.never), {
          group: "crashy",
          maxDeliver: 2,
          drainTimeout: 0
        })
        yield* letTimePass(20)
      }))
    }
    assert.equal(runs, 2, "the handler ran for the two allowed deliveries only")
    const [letter] = yield* memory.deadLetters
    assert.equal(letter?.errorTag, "MaxDeliverExceeded")
    assert.equal(letter?.deliveryCount, 3)
    assert.match(letter!.reason, /delivered 3 times without an outcome \(maxDeliver 2\)/)
  })))

test("memory: ackPolicy \"none\" delivers each event once whatever the handler does, and logs what it drops", () => {
  const logs = captureLogs()
  return withMemory({}, logs.provide(Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const memory = yield* MemoryTransport.MemoryTransport
    const seen: Array<string> = []
    yield* bus.subscribe(AssetCreatedEvent, (event) =>
      Effect.suspend((): Effect.Effect<void, RetryLater | Reject> => {
        seen.push(event.assetId)
        if (event.assetId === "retry") return Effect.fail(new RetryLater({ delay: "100 millis", reason: "not yet" }))
        if (event.assetId === "reject") return Effect.fail(new Reject({ reason: "unwanted" }))
        return Effect.void
      }), { group: "fire", ackPolicy: "none", maxDeliver: 3 })
    for (const assetId of ["ok", "retry", "reject"]) yield* bus.publish(AssetCreatedEvent, { assetId })
    yield* waitUntil(() => seen.length === 3, "each event is delivered")
    yield* letTimePass(5_000)
    assert.deepEqual(seen, ["ok", "retry", "reject"], "each once, never again")
    assert.deepEqual(yield* memory.deadLetters, [])
    const [group] = yield* memory.groups
    assert.equal(group!.ackPending, 0)
    assert.equal(group!.redelivered, 0)
    const dropped = logs.lines.filter((line) => line.message.includes(`ackPolicy "none"`)).map((line) => line.message)
    assert.equal(dropped.length, 2, dropped.join(" | "))
    assert.match(dropped.join(" | "), /outcome Nak: .*not yet/)
    assert.match(dropped.join(" | "), /outcome DeadLetter: .*unwanted/)
  })))
})

test("memory: replay \"original\" spaces the retained events exactly as stored, then delivers new ones as they come (TestClock)", () =>
  withMemory({}, Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const start = yield* Effect.clockWith((clock) => clock.currentTimeMillis)
    yield* bus.publish(AssetCreatedEvent, { assetId: "r0" })
    yield* TestClock.adjust("1 second")
    yield* bus.publish(AssetCreatedEvent, { assetId: "r1" })
    yield* TestClock.adjust("3 seconds")
    yield* bus.publish(AssetCreatedEvent, { assetId: "r2" })
    const at: Array<readonly [string, number]> = []
    const subscribed = yield* Effect.clockWith((clock) => clock.currentTimeMillis)
    yield* bus.subscribe(AssetCreatedEvent, (e) =>
      Effect.clockWith((clock) => Effect.sync(() => at.push([e.assetId, clock.currentTimeMillisUnsafe() - subscribed]))), {
      deliverPolicy: "all",
      replay: "original"
    })
    yield* waitUntil(() => at.length === 1, "the first at once")
    yield* TestClock.adjust(999)
    assert.equal(at.length, 1, "the second waits the full stored gap")
    yield* waitUntil(() => at.length === 3, "the rest at their pace")
    assert.deepEqual(at, [["r0", 0], ["r1", 1_000], ["r2", 4_000]])
    // Caught up: a new event does not wait for the gap since r2 was stored.
    yield* TestClock.adjust("10 seconds")
    const published = (yield* Effect.clockWith((clock) => clock.currentTimeMillis)) - subscribed
    yield* bus.publish(AssetCreatedEvent, { assetId: "live" })
    yield* waitUntil(() => at.length === 4, "the new event")
    assert.equal(at[3]![1], published, "delivered as it came")
    assert.equal(subscribed - start, 4_000)
  })))

test("memory: events a \"lastPerSubject\" start picked count as pending until delivered, not as redelivered", () =>
  withMemory({}, Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const memory = yield* MemoryTransport.MemoryTransport
    for (const topic of ["x", "y", "x", "z"]) yield* bus.publishRaw(`cqc.events.v1.lps_${topic}`, new Uint8Array([1]))
    const gate = yield* Deferred.make<void>()
    let started = 0
    yield* bus.subscribeRaw("cqc.events.v1.*", () => Effect.andThen(Effect.sync(() => void started++), Deferred.await(gate)), {
      group: "lps",
      concurrency: 1,
      deliverPolicy: "lastPerSubject"
    })
    yield* waitUntil(() => started === 1, "the first runs")
    const [lag] = yield* memory.groups
    assert.deepEqual({ pending: lag!.pending, ackPending: lag!.ackPending, redelivered: lag!.redelivered }, {
      pending: 2,
      ackPending: 1,
      redelivered: 0
    })
    yield* Deferred.succeed(gate, undefined)
    yield* waitUntil(() => started === 3, "the latest of x, y and z, nothing more")
    yield* letTimePass(100)
    assert.equal(started, 3)
  })))
