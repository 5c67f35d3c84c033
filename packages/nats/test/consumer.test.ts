// The NATS pull consumer against a real nats-server: it pulls only what its handler slots and one read-ahead per slot
// can take (so blocked handlers never leave a pile of delivered messages ageing towards ackWait), keeps running and
// buffered deliveries alive past ackWait, and reports its backlog and drain state through the `Transport`
// capabilities that health checks and metrics read. Each test owns its server.
import { Backoff, defineEvent, Reject } from "@cqbus/core"
import { AssetCreatedEvent, AssetCreatedSchema } from "@cqbus/testkit/events"
import { jetstreamManager } from "@nats-io/jetstream"
import { connect } from "@nats-io/transport-node"
import { Deferred, Effect, Fiber } from "effect"
import assert from "node:assert/strict"
import { test } from "node:test"
import { bus, deleteConsumer, inScope, run, server, waitFor } from "./support/nats.ts"

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

/**
 * A subscription (of `group`, or ephemeral) whose handler never ends, once it holds one event; its drain budget is
 * 800 ms.
 */
const handlerThatHangs = (group: string | undefined) =>
  Effect.gen(function*() {
    const nats = yield* server()
    const { bus: b, transport } = yield* bus({ servers: nats.url, source: "consumer" })
    let started = 0
    const sub = yield* inScope(b.subscribe(AssetCreatedEvent, () =>
      Effect.andThen(Effect.sync(() => void started++), Effect.never), { ...(group === undefined ? {} : { group }), drainTimeout: "800 millis" }))
    yield* b.publish(AssetCreatedEvent, { assetId: group ?? "ephemeral" })
    yield* waitFor(() => started === 1, "the handler runs")
    return { sub, transport }
  })

test("nats consumer: `draining` turns true while a group subscription drains and the consumer leaves the list after", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const { sub, transport } = yield* handlerThatHangs("draining")
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
    const { sub, transport } = yield* handlerThatHangs(undefined)
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

/** The group's consumer info, asked on a connection of its own. */
const consumerInfo = (url: string, stream: string, name: string) =>
  Effect.promise(async () => {
    const nc = await connect({ servers: url })
    try {
      return await (await jetstreamManager(nc)).consumers.info(stream, name)
    } finally {
      await nc.close()
    }
  })

test("nats consumer: a dead-lettered message is terminated for good (nats-server 2.9 ignores `+TERM <reason>`)", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { bus: b, nats: transport } = yield* bus({ servers: nats.url, source: "consumer" })
    let runs = 0
    yield* b.subscribe(AssetCreatedEvent, () =>
      Effect.andThen(Effect.sync(() => void runs++), Effect.fail(new Reject({ reason: "not for us" }))), {
      group: "rejecting",
      ackWait: "1 second"
    })
    yield* b.publish(AssetCreatedEvent, { assetId: "r1" })
    yield* waitFor(() => runs === 1, "the handler ran")
    yield* Effect.sleep("2500 millis") // two ackWaits: an unterminated message would have come back by now
    assert.equal(runs, 1, "the rejected message is not delivered again")
    const info = yield* consumerInfo(nats.url, transport.stream, "rejecting")
    assert.equal(info.num_ack_pending, 0, "nothing waits for an ack")
  })))

test("nats consumer: a key function that throws is a defect of that delivery, and the other events keep flowing", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { bus: b, transport } = yield* bus({ servers: nats.url, source: "consumer" })
    const Keyed = defineEvent(AssetCreatedSchema, {
      key: (event) => {
        if (event.assetId.startsWith("bad")) throw new Error("no key for this one")
        return event.assetId
      }
    })
    const handled: Array<string> = []
    yield* b.subscribe(Keyed, (event) => Effect.sync(() => void handled.push(event.assetId)), {
      group: "keyed",
      concurrency: 2,
      maxDeliver: 2,
      backoff: Backoff.constant("50 millis")
    })
    // The bad ones get their key from the publisher (the key function would throw there too).
    for (const assetId of ["bad-1", "bad-2", "g1", "g2", "g3", "g4", "g5"]) {
      yield* b.publish(Keyed, { assetId }, assetId.startsWith("bad") ? { key: assetId } : {})
    }
    yield* waitFor(() => handled.length === 5, "the good events are handled", 15_000, () => handled.join(","))
    let dead: Array<ReadonlyArray<unknown>> = []
    for (let i = 0; i < 100 && dead.length < 2; i++) {
      dead = (yield* transport.deadLetters!).map((l) => [l.errorTag, l.deliveryCount])
      if (dead.length < 2) yield* Effect.sleep("100 millis")
    }
    assert.deepEqual(dead, [["Defect", 2], ["Defect", 2]], "both bad events were dead-lettered after maxDeliver")
  })))

test("nats consumer: a consumer recreated while a message waits for its redelivery delay still delivers it", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { bus: b, nats: transport } = yield* bus({ servers: nats.url, source: "consumer" })
    const attempts: Array<number> = []
    yield* b.subscribe(AssetCreatedEvent, (_, delivery) =>
      Effect.andThen(
        Effect.sync(() => void attempts.push(delivery.attempt)),
        delivery.attempt === 1 ? Effect.fail("not yet") : Effect.void
      ), { group: "backoff", backoff: Backoff.constant("3 seconds") })
    yield* b.publish(AssetCreatedEvent, { assetId: "n1" })
    yield* waitFor(() => attempts.length === 1, "the first delivery failed")
    yield* Effect.sleep("300 millis") // the nak is on the server
    yield* Effect.promise(async () => {
      const nc = await connect({ servers: nats.url })
      await deleteConsumer(await jetstreamManager(nc), transport.stream, "backoff")
      await nc.close()
    })
    yield* waitFor(() => attempts.length >= 2, "the message comes again from the recreated consumer", 15_000)
    assert.equal(attempts[0], 1)
  })))

test("nats consumer: a group created elsewhere with max_batch is pulled within it, without a storm of refused pulls", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { bus: b, nats: transport } = yield* bus({ servers: nats.url, source: "consumer" })
    // What a Go service sharing the group might have created.
    yield* Effect.promise(async () => {
      const nc = await connect({ servers: nats.url })
      await (await jetstreamManager(nc)).consumers.add(transport.stream, {
        durable_name: "limited",
        ack_policy: "explicit" as never,
        filter_subject: AssetCreatedEvent.topic,
        max_batch: 10
      })
      await nc.close()
    })
    const total = 200
    yield* Effect.forEach(Array.from({ length: total }, (_, i) => i), (i) =>
      b.publish(AssetCreatedEvent, { assetId: `l${i}` }), { concurrency: 32, discard: true })
    // Count the pull requests this consumer makes.
    let pulls = 0
    const spy = yield* Effect.promise(() => connect({ servers: nats.url }))
    spy.subscribe(`$JS.API.CONSUMER.MSG.NEXT.${transport.stream}.limited`, { callback: () => void pulls++ })
    yield* Effect.promise(() => spy.flush())
    const handled = new Set<string>()
    yield* b.subscribe(AssetCreatedEvent, (event) => Effect.sync(() => void handled.add(event.assetId)), {
      group: "limited",
      concurrency: 64
    })
    yield* waitFor(() => handled.size === total, "every event is handled", 20_000, () => `${handled.size} of ${total}`)
    yield* Effect.sleep("500 millis")
    yield* Effect.promise(() => spy.close())
    assert.ok(pulls <= total, `${pulls} pull requests for ${total} events in batches of at most 10`)
  })))
