// Dead-letter administration against a real nats-server (issue 14 item 3): a poisoned event is dead-lettered, is
// listed by its topic and error tag, is replayed after the handler is fixed — inside JetStream's duplicate window,
// with its original event id — and is then processed exactly once by the group that dead-lettered it, while another
// group on the same topic does not process it again. Purge by filter removes only the matching records (the
// server's subject purge, and the walk-and-delete path) and returns the count. The routes answer on a real listener,
// mutating ones only when enabled. Paging walks the stream by sequence without any consumer.
import { Backoff, DeadLetters, EventBus, Reject, Transport } from "@cqbus/core"
import { deadLetterRouter } from "@cqbus/health"
import { NatsEventBus } from "@cqbus/nats"
import { AssetCreatedEvent, PriceUpdatedEvent } from "@cqbus/testkit/events"
import { serve } from "@hono/node-server"
import { jetstreamManager } from "@nats-io/jetstream"
import { connect } from "@nats-io/transport-node"
import { Context, Effect, Layer } from "effect"
import { Hono } from "hono"
import assert from "node:assert/strict"
import type { AddressInfo } from "node:net"
import { test } from "node:test"
import { run, server, waitFor } from "./support/nats.ts"

const fast = { backoff: Backoff.constant("20 millis") }

/** Lists until at least `count` dead letters are stored (real time, at most 20 seconds). */
const storedAtLeast = (deadLetters: DeadLetters.DeadLettersShape, count: number) =>
  Effect.gen(function*() {
    while ((yield* deadLetters.list({ limit: 1000 })).items.length < count) yield* Effect.sleep("50 millis")
  }).pipe(Effect.timeout("20 seconds"))

test("nats dead letters: list by topic and error tag, replay once to the fixed group, purge by filter, routes", { timeout: 90_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const context = yield* Layer.build(
      DeadLetters.layer({ events: [AssetCreatedEvent] }).pipe(
        Layer.provideMerge(NatsEventBus.layer({ servers: nats.url, source: "dlq-test", logFailures: false }))
      )
    )
    const bus = Context.get(context, EventBus.EventBus)
    const transport = Context.get(context, Transport.Transport)
    const deadLetters = Context.get(context, DeadLetters.DeadLetters)

    let broken = true
    const billing: Array<{ readonly id: string; readonly attempt: number; readonly replays: string | undefined }> = []
    const audit: Array<string> = []
    yield* bus.subscribe(AssetCreatedEvent, (e, d) => {
      if (e.assetId === "poison" && broken) return Effect.fail(new Reject({ reason: "cannot bill a poisoned asset" }))
      if (e.assetId === "flaky") return Effect.fail(new Error("the ledger is down"))
      return Effect.sync(() => billing.push({ id: d.eventId, attempt: d.attempt, replays: d.header("cqbus-replay-count") }))
    }, { group: "billing", maxDeliver: 2, ...fast })
    yield* bus.subscribe(AssetCreatedEvent, (_e, d) => Effect.sync(() => audit.push(d.eventId)), { group: "audit" })
    yield* bus.subscribe(PriceUpdatedEvent, () => Effect.fail(new Reject({ reason: "stale price" })), { group: "prices" })

    yield* bus.publish(AssetCreatedEvent, { assetId: "fine-1" }, { eventId: "evt-fine-1" })
    yield* bus.publish(AssetCreatedEvent, { assetId: "poison" }, { eventId: "evt-poison" })
    yield* bus.publish(AssetCreatedEvent, { assetId: "flaky" }, { eventId: "evt-flaky" })
    yield* bus.publish(PriceUpdatedEvent, { assetId: "p", price: "1" }, { eventId: "evt-price" })
    const stored = () => Effect.map(deadLetters.list({ limit: 100 }), (page) => page.items.length)
    yield* storedAtLeast(deadLetters, 3)
    yield* waitFor(() => audit.length === 3, "the audit group handled the 3 assets")

    const poisoned = yield* deadLetters.list({ topic: AssetCreatedEvent.topic, errorTag: "Reject" })
    assert.equal(poisoned.items.length, 1, "listed by its topic and error tag")
    const record = poisoned.items[0]!
    assert.equal(record.headers["ce-id"], "evt-poison")
    assert.equal(record.group, "billing")
    assert.equal(record.stream, "CQC_EVENTS")
    assert.equal(record.headers["Nats-Msg-Id"], undefined, "the record's own dedupe id is not an original header")
    const inspected = yield* deadLetters.get(record.id)
    assert.deepEqual(inspected.decoded && "json" in inspected.decoded ? inspected.decoded.json : undefined, { assetId: "poison" })
    assert.equal((yield* deadLetters.list({ errorTag: "Error" })).items[0]?.headers["ce-id"], "evt-flaky")

    // Fixed, and replayed well inside the stream's 2-minute duplicate window: the republish carries its own
    // Nats-Msg-Id, so JetStream stores it, while the event keeps its id.
    broken = false
    const replayed = yield* deadLetters.replay([record.id])
    assert.deepEqual(replayed, { replayed: 1, duplicates: 0, removed: 0, failures: [], more: false })
    yield* waitFor(() => billing.some((b) => b.id === "evt-poison"), "billing processes the replayed event")
    yield* Effect.sleep("500 millis")
    assert.deepEqual(billing.filter((b) => b.id === "evt-poison"), [{ id: "evt-poison", attempt: 1, replays: "1" }], "exactly once")
    assert.equal(audit.filter((id) => id === "evt-poison").length, 1, "the audit group does not process it again")
    assert.equal(audit.length, 3)
    assert.equal((yield* deadLetters.replay([record.id])).duplicates, 1, "a second replay of the record is a duplicate")

    // Purge: the server's subject purge (topic only), then the walk-and-delete path (error tag).
    assert.equal(yield* deadLetters.purge({ topic: PriceUpdatedEvent.topic }), 1)
    assert.equal(yield* deadLetters.purge({ topic: AssetCreatedEvent.topic, errorTag: "Error" }), 1)
    const left = yield* deadLetters.list({})
    assert.deepEqual(left.items.map((i) => i.headers["ce-id"]), ["evt-poison"], "only the matching records were removed")
    assert.equal((yield* transport.deadLetters!).length, 1, "the read-all capability agrees")

    // The routes, on a real listener, over this bus.
    const routes = (mutations: boolean) => new Hono().route("/admin", deadLetterRouter({ runtime: context, mutations }))
    const listen = (app: Hono) =>
      Effect.acquireRelease(
        Effect.callback<{ readonly base: string; readonly close: () => void }>((resume) => {
          const s = serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" }, (info: AddressInfo) =>
            resume(Effect.succeed({ base: `http://127.0.0.1:${info.port}`, close: () => s.close() })))
        }),
        (listener) => Effect.sync(listener.close)
      )
    const readOnly = yield* listen(routes(false))
    const mutating = yield* listen(routes(true))
    const fetchJson = (url: string, init?: RequestInit) =>
      Effect.promise(async () => {
        const response = await fetch(url, init)
        return { status: response.status, body: (await response.text()) }
      })
    const listed = yield* fetchJson(`${readOnly.base}/admin/dead-letters?topic=${AssetCreatedEvent.topic}&errorTag=Reject`)
    assert.equal(listed.status, 200)
    assert.equal(JSON.parse(listed.body).items[0].eventId, "evt-poison")
    const one = yield* fetchJson(`${readOnly.base}/admin/dead-letters/${record.id}`)
    assert.equal(JSON.parse(one.body).decoded.json.assetId, "poison")
    assert.equal((yield* fetchJson(`${readOnly.base}/admin/dead-letters?all=true`, { method: "DELETE" })).status, 404)
    assert.equal((yield* fetchJson(`${readOnly.base}/admin/dead-letters/replay`, { method: "POST", body: "{}" })).status, 404)
    const purged = yield* fetchJson(`${mutating.base}/admin/dead-letters?errorTag=Reject`, { method: "DELETE" })
    assert.deepEqual(JSON.parse(purged.body), { purged: 1 })
    assert.equal((yield* stored()), 0)
  })))

test("nats dead letters: paging walks the stream by sequence, bounded per page, and leaves no consumer", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const context = yield* Layer.build(NatsEventBus.layer({ servers: nats.url, logFailures: false }))
    const bus = Context.get(context, EventBus.EventBus)
    const deadLetters = DeadLetters.make(Context.get(context, Transport.Transport))
    yield* bus.subscribe(AssetCreatedEvent, (e) =>
      Effect.fail(new Reject({ reason: Number(e.assetId) % 3 === 0 ? "multiple of three" : "other" })), { group: "g" })
    for (let i = 0; i < 30; i++) yield* bus.publish(AssetCreatedEvent, { assetId: String(i) })
    yield* storedAtLeast(deadLetters, 30)
    const ids: Array<string> = []
    let cursor: string | undefined
    let pages = 0
    do {
      const page = yield* deadLetters.list({ reasonContains: "three", limit: 4, ...(cursor === undefined ? {} : { cursor }) })
      assert.ok(page.items.length <= 4)
      ids.push(...page.items.map((i) => i.id))
      cursor = page.next
      pages++
    } while (cursor !== undefined)
    assert.equal(ids.length, 10, "every third of 30")
    assert.equal(pages, 3)
    assert.deepEqual(ids, [...ids].sort((a, b) => Number(a) - Number(b)))
    const bad = yield* Effect.flip(deadLetters.list({ cursor: "x" }))
    assert.equal(bad.reason, "InvalidQuery")
    const nc = yield* Effect.promise(() => connect({ servers: nats.url }))
    const jsm = yield* Effect.promise(() => jetstreamManager(nc))
    const info = yield* Effect.promise(() => jsm.streams.info("CQC_DLQ"))
    assert.equal(info.state.consumer_count, 0, "listing created no consumer on the dead-letter stream")
    yield* Effect.promise(() => nc.close())
  })))
