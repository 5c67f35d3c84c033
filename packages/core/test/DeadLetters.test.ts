// DeadLetters over a hand-made store and transport: what a replay publishes (original headers without Nats-* lines,
// the replay count raised, the addressee set or cleared, a dedupe id apart from the event id, the key), which records
// fail and why, what is removed; option checks; a transport without a store. And on the memory bus: `everyGroup`
// reaches every group again.
import assert from "node:assert/strict"
import { test } from "node:test"
import { DeadLetters, EventBus, PublishError, Reject } from "@cqbus/core"
import type { OutgoingMessage, TransportShape } from "@cqbus/core/backend"
import { AssetCreatedEvent } from "@cqbus/testkit/events"
import { Effect, Layer } from "effect"

const entry = (id: string, extra: Partial<DeadLetters.DeadLetterEntry> = {}): DeadLetters.DeadLetterEntry => ({
  id,
  subject: "cqc.events.v1.asset_created",
  body: new Uint8Array([10, 1, 120]),
  headers: {
    "ce-id": `evt-${id}`,
    "ce-type": "cqc.events.v1.AssetCreated",
    "ce-partitionkey": "asset-7",
    "Nats-Msg-Id": "dlq:CQC_EVENTS:3:billing",
    "cqbus-replay-count": "2",
    "cqbus-replay-group": "someone-else",
    "x-trace": "keep me"
  },
  reason: "rejected: no",
  errorTag: "Reject",
  deliveryCount: 1,
  sequence: 3,
  group: "billing",
  deadLetteredAt: new Date(0),
  ...extra
})

/** A transport whose store holds `entries` and whose publishes are recorded (a topic "refuse.*" fails). */
const fake = (entries: ReadonlyArray<DeadLetters.DeadLetterEntry>) => {
  const published: Array<OutgoingMessage> = []
  const removed: Array<ReadonlyArray<string>> = []
  const transport: TransportShape = {
    name: "fake",
    publish: (message) =>
      message.topic.startsWith("refuse.")
        ? Effect.fail(new PublishError({ topic: message.topic, reason: "NoStream", retriable: false, message: "no stream" }))
        : Effect.sync(() => {
          published.push(message)
          return { topic: message.topic, stream: "S", sequence: published.length, duplicate: false }
        }),
    consume: () => Effect.void,
    check: Effect.void,
    deadLetterStore: {
      list: () => Effect.succeed({ items: entries }),
      get: (id) => Effect.succeed(entries.find((e) => e.id === id)),
      remove: (ids) => Effect.sync(() => (removed.push(ids), ids.length)),
      purge: () => Effect.succeed(0)
    }
  }
  return { transport, published, removed }
}

test("DeadLetters.replay publishes the original body and headers, keeps ce-id, raises the count, addresses the group", async () => {
  const { published, removed, transport } = fake([
    entry("1"),
    entry("2", { omitted: "900 header bytes, 2000000 body bytes", body: new Uint8Array(0) }),
    entry("3", { subject: "refuse.it" }),
    entry("4", { group: undefined, headers: { "ce-id": "evt-4" } })
  ])
  const deadLetters = DeadLetters.make(transport)
  const result = await Effect.runPromise(deadLetters.replay(["1", "2", "3", "4", "5"], { remove: true }))
  assert.equal(result.replayed, 2)
  assert.deepEqual(result.failures.map((f) => f.id), ["2", "3", "5"])
  assert.match(result.failures[0]!.message, /holds no body.*stream \? at sequence 3/)
  assert.match(result.failures[1]!.message, /no stream/)
  assert.match(result.failures[2]!.message, /no dead letter has the id "5"/)
  assert.deepEqual(removed, [["1", "4"]], "only the republished records are removed")
  const [first, fourth] = published
  assert.equal(first!.topic, "cqc.events.v1.asset_created")
  assert.deepEqual([...first!.body], [10, 1, 120])
  assert.deepEqual(first!.headers, {
    "ce-id": "evt-1",
    "ce-type": "cqc.events.v1.AssetCreated",
    "ce-partitionkey": "asset-7",
    "cqbus-replay-count": "3",
    "cqbus-replay-group": "billing",
    "x-trace": "keep me"
  })
  assert.equal(first!.eventId, "evt-1:replay:3:billing", "a dedupe id of its own, not the original's")
  assert.equal(first!.dedupe, true)
  assert.equal(first!.key, "asset-7")
  assert.deepEqual(fourth!.headers, { "ce-id": "evt-4", "cqbus-replay-count": "1" }, "no group: addressed to nobody")
  assert.equal(fourth!.eventId, "evt-4:replay:1")

  const everyone = fake([entry("1")])
  await Effect.runPromise(DeadLetters.make(everyone.transport).replay(["1"], { everyGroup: true }))
  assert.equal(everyone.published[0]!.headers["cqbus-replay-group"], undefined, "everyGroup clears the addressee")
  const named = fake([entry("1")])
  await Effect.runPromise(DeadLetters.make(named.transport).replay(["1"], { group: "audit" }))
  assert.equal(named.published[0]!.headers["cqbus-replay-group"], "audit")
  assert.equal(named.published[0]!.eventId, "evt-1:replay:3:audit")
})

test("DeadLetters: malformed options fail InvalidQuery naming them; a transport without a store fails Unsupported", async () => {
  const deadLetters = DeadLetters.make(fake([]).transport)
  const fails = async (effect: Effect.Effect<unknown, { readonly reason: string; readonly message: string }>, pattern: RegExp) => {
    const error = await Effect.runPromise(Effect.flip(effect))
    assert.equal(error.reason, "InvalidQuery")
    assert.match(error.message, pattern)
  }
  await fails(deadLetters.replay(["1"], { group: "a", everyGroup: true }), /exclude each other/)
  await fails(deadLetters.replay({ from: new Date("nope") }), /from must be a valid Date/)
  await fails(deadLetters.replay({}, { limit: 0 }), /replay\.limit/)
  await fails(deadLetters.list({ limit: 1001 }), /list\.limit/)
  await fails(deadLetters.list({ topic: "a..b" }), /list\.topic/)
  await fails(deadLetters.purge({ group: "" }), /purge\.group/)
  await fails(deadLetters.get(""), /non-empty/)

  const { deadLetterStore: _, ...bare } = fake([]).transport
  const none = DeadLetters.make(bare)
  for (const effect of [none.list(), none.get("1"), none.replay(["1"]), none.purge({})]) {
    const error = await Effect.runPromise(Effect.flip(effect as Effect.Effect<unknown, { readonly reason: string; readonly message: string }>))
    assert.equal(error.reason, "Unsupported")
    assert.equal(String(error), "DeadLetterError: the fake transport has no dead-letter store to administer")
  }
})

test("DeadLetters on the memory bus: a replay with everyGroup reaches every group again", async () => {
  const seen: Array<string> = []
  await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const deadLetters = yield* DeadLetters.DeadLetters
    let broken = true
    yield* bus.subscribe(AssetCreatedEvent, (_e, d) =>
      broken ? Effect.fail(new Reject({ reason: "broken" })) : Effect.sync(() => seen.push(`a:${d.header("cqbus-replay-count")}`)), { group: "a" })
    yield* bus.subscribe(AssetCreatedEvent, (_e, d) => Effect.sync(() => seen.push(`b:${d.header("cqbus-replay-count") ?? "-"}`)), { group: "b" })
    yield* bus.publish(AssetCreatedEvent, { assetId: "1" })
    while ((yield* deadLetters.list()).items.length === 0) yield* Effect.sleep("5 millis")
    broken = false
    const result = yield* deadLetters.replay({ group: "a" }, { everyGroup: true })
    assert.equal(result.replayed, 1)
    while (seen.length < 3) yield* Effect.sleep("5 millis")
  }).pipe(Effect.provide(DeadLetters.layer().pipe(Layer.provideMerge(EventBus.layerMemory({ logFailures: false })))))))
  assert.deepEqual(seen.sort(), ["a:1", "b:-", "b:1"])
})
