// The NATS pull consumer against a real nats-server: it pulls only what its handler slots and one read-ahead per slot
// can take (so blocked handlers never leave a pile of delivered messages ageing towards ackWait), keeps running and
// buffered deliveries alive past ackWait, and reports its backlog and drain state through the `Transport`
// capabilities that health checks and metrics read. Each test owns its server.
import { AssetCreatedEvent } from "@cqbus/testkit/events"
import { Deferred, Effect, Fiber } from "effect"
import assert from "node:assert/strict"
import { test } from "node:test"
import { bus, inScope, run, server, waitFor } from "./support/nats.ts"

test("nats consumer: with every handler blocked it holds at most concurrency × 2 deliveries; the rest stays on the server", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { bus: b, transport } = yield* bus({ servers: nats.url, source: "consumer" })
    const total = 40
    yield* Effect.forEach(Array.from({ length: total }, (_, i) => i), (i) =>
      b.publish(AssetCreatedEvent, { assetId: `b${i}` }), { concurrency: 16, discard: true })
    const gate = yield* Deferred.make<void>()
    const handled: Array<string> = []
    let started = 0
    yield* b.subscribe(AssetCreatedEvent, (event) =>
      Effect.gen(function*() {
        started++
        yield* Deferred.await(gate)
        handled.push(event.assetId)
      }), { group: "blocked", concurrency: 3 })
    yield* waitFor(() => started === 3, "3 handlers run")
    // Long enough for several pull rounds and heartbeats: a consumer that over-pulls would have taken more by now.
    yield* Effect.sleep("1500 millis")
    const [lag] = yield* transport.consumers!
    assert.ok(lag !== undefined, "the live consumer is listed")
    console.log(`blocked handlers: ${JSON.stringify(lag)}`)
    assert.equal(started, 3, "no more than `concurrency` handlers run")
    assert.equal(lag.group, "blocked")
    assert.equal(lag.topic, AssetCreatedEvent.topic)
    assert.ok(lag.ackPending <= 6, `at most 3 running + 3 read ahead are delivered, got ${lag.ackPending}`)
    assert.ok(lag.ackPending >= 3, `the running ones are delivered, got ${lag.ackPending}`)
    assert.equal(lag.pending, total - lag.ackPending, "everything else is still pending on the server")
    assert.equal(lag.draining, false)
    yield* Deferred.succeed(gate, undefined)
    yield* waitFor(() => handled.length >= total, "every event is handled", 15_000, () => `${handled.length} of ${total}`)
    assert.equal(new Set(handled).size, total, "each event once")
  })))

test("nats consumer: a handler running past ackWait and the deliveries buffered behind it are kept alive, not redelivered", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { bus: b } = yield* bus({ servers: nats.url, source: "consumer" })
    const attempts = new Map<string, Array<number>>()
    // One slot and ackWait 1 s: the second and third events wait in the read-ahead buffer for 1.5–3 s.
    yield* b.subscribe(AssetCreatedEvent, (event, delivery) =>
      Effect.andThen(
        Effect.sync(() => attempts.set(event.assetId, [...attempts.get(event.assetId) ?? [], delivery.attempt])),
        Effect.sleep("1500 millis")
      ), { group: "slow", concurrency: 1, ackWait: "1 second" })
    yield* Effect.forEach(["s1", "s2", "s3"], (assetId) => b.publish(AssetCreatedEvent, { assetId }), { discard: true })
    yield* waitFor(() => attempts.size === 3, "all three started", 20_000)
    yield* Effect.sleep("1800 millis") // past the last handler's end and one more ackWait
    assert.deepEqual(Object.fromEntries(attempts), { s1: [1], s2: [1], s3: [1] }, "each handled once, at attempt 1")
  })))

test("nats consumer: `draining` turns true while a group subscription drains and the consumer leaves the list after", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { bus: b, transport } = yield* bus({ servers: nats.url, source: "consumer" })
    let started = 0
    const sub = yield* inScope(b.subscribe(AssetCreatedEvent, () =>
      Effect.andThen(Effect.sync(() => void started++), Effect.never), { group: "draining", drainTimeout: "800 millis" }))
    yield* b.publish(AssetCreatedEvent, { assetId: "d1" })
    yield* waitFor(() => started === 1, "the handler runs")
    assert.equal(yield* transport.draining!, false, "not draining while serving")
    const closing = yield* Effect.forkChild(sub.close)
    yield* Effect.sleep("300 millis")
    const during = yield* transport.draining!
    const listed = (yield* transport.consumers!).map((c) => c.draining)
    yield* Fiber.join(closing)
    assert.equal(during, true, "draining while the handler holds the drain")
    assert.deepEqual(listed, [true], "the consumer is listed as draining")
    assert.equal(yield* transport.draining!, false, "no longer draining once closed")
    assert.deepEqual(yield* transport.consumers!, [], "a closed subscription is no longer listed")
  })))

test("nats consumer: an ephemeral subscription draining shows on its consumer but is not the transport's drain", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { bus: b, transport } = yield* bus({ servers: nats.url, source: "consumer" })
    let started = 0
    const sub = yield* inScope(b.subscribe(AssetCreatedEvent, () =>
      Effect.andThen(Effect.sync(() => void started++), Effect.never), { drainTimeout: "800 millis" }))
    yield* b.publish(AssetCreatedEvent, { assetId: "e1" })
    yield* waitFor(() => started === 1, "the handler runs")
    const closing = yield* Effect.forkChild(sub.close)
    yield* Effect.sleep("300 millis")
    const listed = (yield* transport.consumers!).map((c) => [c.group, c.draining])
    const during = yield* transport.draining!
    yield* Fiber.join(closing)
    assert.deepEqual(listed, [[undefined, true]], "its consumer is listed as draining")
    assert.equal(during, false, "a short-lived subscription closing does not fail readiness")
  })))

test("nats consumer: a full read-ahead buffer is worked off once the slots free up, each event handled once", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { bus: b } = yield* bus({ servers: nats.url, source: "consumer" })
    // 500 handler slots blocked on a gate, 500 more deliveries read ahead behind them: when the gate opens, each slot
    // that frees starts a buffered delivery whose handler now finishes at once, inside the previous settle.
    const slots = 500
    const results = yield* b.publishAll(AssetCreatedEvent, Array.from({ length: slots * 2 }, (_, i) => ({ assetId: `q${i}` })))
    assert.equal(results.filter((r) => r._tag === "Success").length, slots * 2)
    const gate = yield* Deferred.make<void>()
    let open = false
    const handled = new Set<string>()
    let runs = 0
    let startedBeforeOpen = 0
    yield* b.subscribe(AssetCreatedEvent, (event) =>
      (open ? Effect.void : Effect.andThen(Effect.sync(() => void startedBeforeOpen++), Deferred.await(gate))).pipe(
        Effect.andThen(Effect.sync(() => {
          runs++
          handled.add(event.assetId)
        }))
      ), { group: "deep", concurrency: slots })
    yield* Effect.sleep("1500 millis") // every slot taken and the read-ahead delivered
    open = true
    yield* Deferred.succeed(gate, undefined)
    assert.equal(startedBeforeOpen, slots, "only `concurrency` handlers ran while all were blocked")
    yield* waitFor(() => handled.size >= slots * 2, "every event is handled", 30_000, () => `${handled.size} of ${slots * 2}`)
    yield* Effect.sleep("200 millis")
    assert.equal(runs, slots * 2, "each event was handled once")
  })))
