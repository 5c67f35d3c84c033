// Reconnects against a real nats-server that is killed and restarted on the same port and store: the reconnect hooks
// run once per reconnect in registration order (a failing one is logged and skipped), a hook whose scope closed no
// longer runs, a group subscription resumes without losing an event, the connection events show
// disconnected → reconnecting → reconnected, and closing the bus emits `Closed`. Each test owns its server.
import { EventBus, type ConnectionEvent, Transport } from "@cqbus/core"
import { NatsConnection, NatsEventBus } from "@cqbus/nats"
import { captureLogs } from "@cqbus/testkit"
import { AssetCreatedEvent } from "@cqbus/testkit/events"
import { Context, Effect, Fiber, Layer, Stream } from "effect"
import assert from "node:assert/strict"
import { test } from "node:test"
import { inScope, run, server, waitFor } from "./support/nats.ts"

const BATCH = 50

test("nats reconnect: hooks run once per reconnect in order, subscriptions resume without loss, events show the outage", { timeout: 90_000 }, () => {
  const logs = captureLogs()
  return run(logs.provide(Effect.gen(function*() {
    const nats = yield* server()
    const id = crypto.randomUUID().replaceAll("-", "").slice(0, 12).toUpperCase()
    // The bus in a scope of its own, so the test can close it and see `Closed` while the event reader still runs.
    const built = yield* inScope(Layer.build(NatsEventBus.layer({
      servers: nats.url,
      source: "reconnect",
      stream: { name: `RECONNECT_${id}` },
      reconnect: { wait: "100 millis", jitter: "50 millis" }
    })))
    const bus = Context.get(built.value, EventBus.EventBus)
    const transport = Context.get(built.value, Transport.Transport)
    const connection = Context.get(built.value, NatsConnection.NatsConnection)
    const withConnection = Effect.provideService(NatsConnection.NatsConnection, connection)

    // Every connection event, read through the Transport capability, until the stream ends (after `Closed`).
    assert.ok(transport.connection?.events !== undefined, "the NATS transport reports connection events")
    const seen: Array<ConnectionEvent> = []
    const reader = yield* Effect.forkScoped(Stream.runForEach(transport.connection.events, (e) => Effect.sync(() => seen.push(e))))
    // The same stream through NatsConnection, for request-reply users.
    const direct = yield* withConnection(Stream.runCollect(Stream.take(NatsConnection.events, 1)))

    // Three hooks; the second fails every time. A fourth is registered in a scope that closes before any reconnect.
    const ran: Array<string> = []
    let reconnect = 0
    yield* withConnection(NatsConnection.onReconnect(Effect.sync(() => ran.push(`first@${reconnect}`))))
    yield* withConnection(NatsConnection.onReconnect(Effect.andThen(Effect.sync(() => ran.push(`failing@${reconnect}`)), Effect.fail("refresh failed"))))
    yield* withConnection(NatsConnection.onReconnect(Effect.sync(() => ran.push(`third@${reconnect}`))))
    const gone = yield* inScope(withConnection(NatsConnection.onReconnect(Effect.sync(() => ran.push(`gone@${reconnect}`)))))
    yield* gone.close

    // A group subscription counting every delivery by event id.
    const handled = new Map<string, number>()
    yield* bus.subscribe(AssetCreatedEvent, (_event, delivery) =>
      Effect.sync(() => {
        handled.set(delivery.eventId, (handled.get(delivery.eventId) ?? 0) + 1)
      }), { group: `reconnect-${id}` }).pipe(Effect.provideContext(built.value))
    const publishBatch = (round: number) =>
      Effect.forEach(
        Array.from({ length: BATCH }, (_, i) => `r${round}-${i}`),
        (eventId) => bus.publish(AssetCreatedEvent, { assetId: eventId }, { eventId }),
        { concurrency: 16, discard: true }
      )

    yield* publishBatch(0)
    yield* waitFor(() => handled.size === BATCH, "the first batch is handled")
    for (const round of [1, 2]) {
      reconnect = round
      yield* Effect.promise(() => nats.kill())
      yield* waitFor(() => seen.some((e) => e._tag === "Disconnected" && seen.indexOf(e) > lastReconnected(seen)), `the client sees outage ${round}`)
      yield* Effect.promise(() => nats.restart())
      yield* waitFor(() => seen.filter((e) => e._tag === "Reconnected").length === round, `reconnect ${round}`, 20_000)
      yield* waitFor(() => ran.filter((r) => r.startsWith("third@")).length === round, `the hooks of reconnect ${round}`)
      yield* publishBatch(round)
      yield* waitFor(() => handled.size === BATCH * (round + 1), `batch ${round} is handled`, 20_000, () => `${handled.size} handled`)
    }

    assert.deepEqual(ran, ["first@1", "failing@1", "third@1", "first@2", "failing@2", "third@2"], "once per reconnect, in order")
    const failures = logs.lines.filter((line) => line.level === "Warn" && line.message.includes("reconnect hook 2 of 3 failed"))
    assert.equal(failures.length, 2, "each failure of the failing hook leaves one warning")
    assert.equal(handled.size, BATCH * 3, "every event published before, between and after the outages is handled")

    assert.deepEqual([...direct].map((e) => e._tag), ["Connected"], "NatsConnection.events starts with the present state")
    assert.deepEqual(seen[0], { _tag: "Connected", server: seen[0]?._tag === "Connected" ? seen[0].server : undefined })
    // Each outage: Disconnected, one Reconnecting per attempt (numbered from 1), then Reconnected after that many.
    const outages = outagesOf(seen.slice(1))
    assert.equal(outages.length, 2, `two outages in ${JSON.stringify(seen)}`)
    for (const outage of outages) {
      assert.equal(outage[0]?._tag, "Disconnected")
      const attempts = outage.filter((e) => e._tag === "Reconnecting").map((e) => e._tag === "Reconnecting" ? e.attempt : 0)
      assert.ok(attempts.length >= 1, "at least one attempt")
      assert.deepEqual(attempts, attempts.map((_, i) => i + 1), "attempts are numbered 1, 2, …")
      const last = outage[outage.length - 1]
      assert.equal(last?._tag, "Reconnected")
      assert.equal(last._tag === "Reconnected" ? last.attempts : -1, attempts.length)
    }
    const state = yield* transport.connection.get
    assert.equal(state.status, "connected")
    assert.equal(state.reconnects, 2)

    // Closing the bus closes its connection: the stream ends with `Closed`.
    yield* built.close
    yield* Effect.timeout(Fiber.await(reader), "10 seconds")
    assert.deepEqual(seen[seen.length - 1], { _tag: "Closed", reason: "closed" })
    assert.equal((yield* transport.connection.get).status, "closed")
    // A reader that comes after the close sees `Closed` at once, and its stream ends.
    const late = yield* Effect.timeout(Stream.runCollect(transport.connection.events), "5 seconds")
    assert.deepEqual([...late], [{ _tag: "Closed", reason: "closed" }])
  })))
})

/** The index of the last `Reconnected` event (-1 if none). */
const lastReconnected = (events: ReadonlyArray<ConnectionEvent>): number => events.map((e) => e._tag).lastIndexOf("Reconnected")

/** Splits events into outages: from a `Disconnected` up to and including the next `Reconnected`. */
const outagesOf = (events: ReadonlyArray<ConnectionEvent>): Array<Array<ConnectionEvent>> => {
  const outages: Array<Array<ConnectionEvent>> = []
  for (const event of events) {
    if (event._tag === "Disconnected") outages.push([event])
    else outages[outages.length - 1]?.push(event)
  }
  return outages
}

test("nats reconnect: a connection that gives up reconnecting emits Closed with the reason, and the stream ends", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const id = crypto.randomUUID().replaceAll("-", "").slice(0, 12).toUpperCase()
    const built = yield* Layer.build(NatsEventBus.layer({
      servers: nats.url,
      source: "reconnect",
      stream: { name: `GIVEUP_${id}` },
      reconnect: { maxAttempts: 2, wait: "50 millis", jitter: "10 millis" }
    }))
    const transport = Context.get(built, Transport.Transport)
    const ran: Array<number> = []
    yield* NatsConnection.onReconnect(Effect.sync(() => ran.push(1))).pipe(
      Effect.provideService(NatsConnection.NatsConnection, Context.get(built, NatsConnection.NatsConnection))
    )
    const seen: Array<ConnectionEvent> = []
    const reader = yield* Effect.forkScoped(Stream.runForEach(transport.connection!.events!, (e) => Effect.sync(() => seen.push(e))))
    yield* waitFor(() => seen.length > 0, "the reader has the present state")
    yield* Effect.promise(() => nats.kill())
    // The stream ends by itself after `Closed`.
    yield* Effect.timeout(Fiber.join(reader), "30 seconds")
    const tags = seen.map((e) => e._tag)
    assert.equal(tags[0], "Connected")
    assert.equal(tags[1], "Disconnected")
    assert.equal(tags[tags.length - 1], "Closed", JSON.stringify(seen))
    assert.ok(!tags.includes("Reconnected"), "never reconnected")
    const closed = seen[seen.length - 1]
    assert.ok(closed?._tag === "Closed" && closed.reason.length > 0, "a reason")
    assert.equal((yield* transport.connection!.get).status, "closed")
    assert.deepEqual(ran, [], "no reconnect, no hook")
  })))
