// Ephemeral topics and topic configuration against a real nats-server: core-NATS delivery to live subscribers and to
// one member of a queue group with nothing stored in any stream, a topic switched to persistent at run time retained
// for a late subscriber (its subject added to the bus's stream, and removed again when it goes back to ephemeral), a
// topic a stream captures refused as ephemeral, outcomes on an ephemeral topic (no redelivery, dead letters stored),
// `persistence: "auto"` on servers with and without JetStream, and the drain. Each test owns its server.
import { Backoff, type DeadLetter, defineEvent, Reject, SubscribeError, TopicConfigError } from "@cqbus/core"
import type { TransportShape } from "@cqbus/core/backend"
import { AssetCreatedSchema } from "@cqbus/testkit/events"
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream"
import { NatsError } from "@cqbus/nats"
import { Cause, Data, Effect, Exit, Option } from "effect"
import assert from "node:assert/strict"
import { test } from "node:test"
import { bus, buildExit, inScope, run, server, waitFor } from "./support/nats.ts"

class Broken extends Data.TaggedError("Broken")<{}> {}

const LIVE = "cqc.live.v1.asset_created"
const Live = defineEvent(AssetCreatedSchema, { topic: LIVE })

/** The dead letters once there are `n` of them (real time, up to 15 s). */
const lettersOnce = (transport: TransportShape, n: number): Effect.Effect<ReadonlyArray<DeadLetter>> =>
  Effect.gen(function*() {
    const deadline = Date.now() + 15_000
    for (;;) {
      const letters = yield* transport.deadLetters!
      if (letters.length >= n) return letters
      if (Date.now() > deadline) return assert.fail(`expected ${n} dead letters, got ${JSON.stringify(letters.map((l) => l.reason))}`)
      yield* Effect.sleep("50 millis")
    }
  })

/** Messages stored in every stream of the server, by stream. */
const stored = (jsm: JetStreamManager): Effect.Effect<Record<string, number>> =>
  Effect.promise(async () => {
    const counts: Record<string, number> = {}
    for await (const info of jsm.streams.list()) counts[info.config.name] = info.state.messages
    return counts
  })

test("nats ephemeral: live subscribers each get every event, a group one member, and no stream stores any", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { bus: b, nats: transport } = yield* bus({ servers: nats.url, source: "eph", topics: { [LIVE]: "ephemeral" } })
    const a: Array<string> = []
    const c: Array<string> = []
    const members: [Array<string>, Array<string>] = [[], []]
    yield* b.subscribe(Live, (event) => Effect.sync(() => void a.push(event.assetId)))
    yield* b.subscribe(Live, (event) => Effect.sync(() => void c.push(event.assetId)))
    for (const member of members) {
      yield* b.subscribe(Live, (event) => Effect.sync(() => void member.push(event.assetId)), { group: "workers" })
    }
    const ids = Array.from({ length: 40 }, (_, i) => `a-${i}`)
    for (const assetId of ids) {
      const ack = yield* b.publish(Live, { assetId, symbol: "EPH" })
      assert.deepEqual(ack, { topic: LIVE, stream: "", sequence: 0, duplicate: false, ephemeral: true })
    }
    yield* waitFor(() => a.length === 40 && c.length === 40 && members[0].length + members[1].length === 40, "every event arrived")
    assert.deepEqual([...a].sort(), [...ids].sort())
    assert.deepEqual([...c].sort(), [...ids].sort())
    assert.deepEqual([...members[0], ...members[1]].sort(), [...ids].sort(), "the group got each event once")
    assert.ok(members[0].length > 0 && members[1].length > 0, `both members got some: ${members[0].length}/${members[1].length}`)
    // A late subscriber gets nothing: nothing was kept.
    const late: Array<string> = []
    yield* b.subscribe(Live, (event) => Effect.sync(() => void late.push(event.assetId)), { group: "late" })
    yield* Effect.sleep("300 millis")
    assert.deepEqual(late, [])
    const jsm = yield* Effect.promise(() => jetstreamManager(transport.connection))
    const counts = yield* stored(jsm)
    assert.equal(counts[transport.stream], 0, `the event stream stores nothing: ${JSON.stringify(counts)}`)
    assert.ok(Object.values(counts).every((n) => n === 0), `no stream stores anything: ${JSON.stringify(counts)}`)
  })))

test("nats ephemeral: a topic switched to persistent at run time is retained for a late subscriber, and back", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { bus: b, nats: transport } = yield* bus({ servers: nats.url, source: "eph" })
    const ephemeral = yield* b.topics.configure(LIVE, "ephemeral")
    assert.equal(ephemeral.effective, "ephemeral")
    yield* b.publish(Live, { assetId: "before", symbol: "X" })
    const persistent = yield* b.topics.configure(LIVE, { persistence: "persistent", description: "asset feed" })
    assert.deepEqual(persistent, {
      topic: LIVE,
      persistence: "persistent",
      description: "asset feed",
      effective: "persistent",
      stream: transport.stream
    })
    const jsm = yield* Effect.promise(() => jetstreamManager(transport.connection))
    const subjects = (yield* Effect.promise(() => jsm.streams.info(transport.stream))).config.subjects
    assert.ok(subjects.includes(LIVE), `the topic was added to ${transport.stream}: ${subjects.join(", ")}`)
    const ack = yield* b.publish(Live, { assetId: "after", symbol: "X" })
    assert.equal(ack.stream, transport.stream)
    assert.equal(ack.ephemeral, undefined)
    const seen: Array<string> = []
    yield* b.subscribe(Live, (event) => Effect.sync(() => void seen.push(event.assetId)), { group: "late" })
    yield* waitFor(() => seen.length >= 1, "the retained event arrived")
    yield* Effect.sleep("200 millis")
    assert.deepEqual(seen, ["after"])
    assert.deepEqual((yield* b.topics.list).map((e) => [e.topic, e.effective]), [[LIVE, "persistent"]])
    // Back to ephemeral: the subject the bus added is removed, so the stream stores no more of it.
    yield* b.topics.configure(LIVE, "ephemeral")
    const after = (yield* Effect.promise(() => jsm.streams.info(transport.stream))).config.subjects
    assert.ok(!after.includes(LIVE), `the topic was removed from ${transport.stream}: ${after.join(", ")}`)
    assert.equal(yield* b.topics.remove(LIVE), true)
    assert.deepEqual(yield* b.topics.get(LIVE), Option.none())
    assert.equal(yield* b.topics.remove(LIVE), false)
  })))

test("nats ephemeral: a topic added to the stream at run time survives another instance's start-up", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const first = yield* bus({ servers: nats.url, source: "eph" })
    yield* first.bus.topics.configure(LIVE, "persistent")
    // A second instance of the service starts with the configured subjects (createOrUpdate): the stream keeps the topic.
    const second = yield* bus({ servers: nats.url, source: "eph" })
    const jsm = yield* Effect.promise(() => jetstreamManager(second.nats.connection))
    const subjects = (yield* Effect.promise(() => jsm.streams.info(second.nats.stream))).config.subjects
    assert.deepEqual([...subjects].sort(), ["cqc.events.v1.>", LIVE].sort())
    const ack = yield* first.bus.publish(Live, { assetId: "kept", symbol: "X" })
    assert.equal(ack.stream, "CQC_EVENTS")
  })))

test("nats ephemeral: a topic a stream captures cannot be ephemeral; names are checked like validateTopic", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { bus: b } = yield* bus({ servers: nats.url, source: "eph", provisioning: "createOnly" })
    const captured = yield* Effect.flip(b.topics.configure("cqc.events.v1.asset_created", "ephemeral"))
    assert.ok(captured instanceof TopicConfigError)
    assert.equal(captured.reason, "Captured")
    assert.match(captured.message, /stream CQC_EVENTS \(subjects cqc\.events\.v1\.>\) captures it/)
    // createOnly may not change the stream: a persistent topic outside it has nowhere to go.
    const nowhere = yield* Effect.flip(b.topics.configure(LIVE, "persistent"))
    assert.ok(nowhere instanceof TopicConfigError)
    assert.equal(nowhere.reason, "NoStream")
    assert.match(nowhere.message, /no stream captures cqc\.live\.v1\.asset_created/)
    const invalid = yield* Effect.flip(b.topics.configure("cqc.events.v1.*", "ephemeral"))
    assert.equal(invalid._tag, "InvalidTopic")
    assert.deepEqual(yield* b.topics.list, [])
  })))

test("nats ephemeral: a failure is not redelivered but dead-lettered with its tag; Reject is dead-lettered", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { bus: b, transport } = yield* bus({ servers: nats.url, source: "eph", topics: { [LIVE]: "ephemeral" } })
    let runs = 0
    yield* b.subscribe(Live, (event) =>
      Effect.suspend((): Effect.Effect<void, Reject | Broken> => {
        runs++
        return event.assetId === "reject" ? Effect.fail(new Reject({ reason: "unwanted" })) : Effect.fail(new Broken())
      }), { group: "g", maxDeliver: 5, backoff: Backoff.constant("10 millis") })
    yield* b.publish(Live, { assetId: "fail", symbol: "X" })
    yield* b.publish(Live, { assetId: "reject", symbol: "X" })
    const found = yield* lettersOnce(transport, 2)
    yield* Effect.sleep("300 millis")
    assert.equal(runs, 2, "each event ran once: nothing is redelivered")
    const tags = found.map((l) => l.errorTag).sort()
    assert.deepEqual(tags, ["Broken", "Reject"])
    const failed = found.find((l) => l.errorTag === "Broken")!
    assert.equal(failed.reason, "not redelivered (ephemeral topic); error Broken")
    assert.equal(failed.group, "g")
  })))

test("nats ephemeral: deliver policies that need storage are refused on an ephemeral topic", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { bus: b } = yield* bus({ servers: nats.url, source: "eph", topics: { [LIVE]: "ephemeral" } })
    const error = yield* Effect.flip(b.subscribe(Live, () => Effect.void, { deliverPolicy: "last" }))
    assert.ok(error instanceof SubscribeError)
    assert.equal(error.reason, "InvalidOptions")
    assert.match(error.message, /ephemeral, so nothing is stored to start from/)
  })))

test("nats ephemeral: persistence auto stores on JetStream and travels over core NATS without it", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const withJs = yield* server()
    const stored = yield* bus({ servers: withJs.url, source: "auto", persistence: "auto" })
    const ack = yield* stored.bus.publish(defineEvent(AssetCreatedSchema), { assetId: "kept", symbol: "X" })
    assert.equal(ack.stream, "CQC_EVENTS")
    const core = yield* server({ jetstream: false })
    // The default (persistent) needs JetStream.
    const refused = yield* buildExit({ servers: core.url, source: "auto" })
    assert.ok(Exit.isFailure(refused))
    const why = Cause.findErrorOption(refused.cause)
    assert.ok(Option.isSome(why) && why.value instanceof NatsError && why.value.reason === "JetStreamUnavailable", String(refused.cause))
    const { bus: b, transport } = yield* bus({ servers: core.url, source: "auto", persistence: "auto" })
    const seen: Array<string> = []
    yield* b.subscribe(Live, (event) => Effect.sync(() => void seen.push(event.assetId)))
    const sent = yield* b.publish(Live, { assetId: "live", symbol: "X" })
    assert.equal(sent.ephemeral, true)
    yield* waitFor(() => seen.length === 1, "the event arrived over core NATS")
    assert.equal((yield* b.topics.configure(LIVE, "auto")).effective, "ephemeral")
    const persistent = yield* Effect.flip(b.topics.configure(LIVE, "persistent"))
    assert.ok(persistent instanceof TopicConfigError)
    assert.equal(persistent.reason, "Unsupported")
    yield* b.check
    assert.equal(transport.deadLetters, undefined, "no dead letters can be stored without JetStream")
  })))

test("nats ephemeral: under an ephemeral default, topics the bus's streams capture stay persistent", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { bus: b } = yield* bus({ servers: nats.url, source: "eph", persistence: "ephemeral" })
    const live = yield* b.publish(Live, { assetId: "l", symbol: "X" })
    assert.equal(live.ephemeral, true)
    const stored = yield* b.publish(defineEvent(AssetCreatedSchema), { assetId: "s", symbol: "X" })
    assert.equal(stored.stream, "CQC_EVENTS", "cqc.events.v1.> is captured by the bus's stream: stored, with a PubAck")
    assert.equal(stored.sequence, 1)
  })))

test("nats ephemeral: the drain lets running handlers finish and dead-letters what never started", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { bus: b, transport } = yield* bus({ servers: nats.url, source: "eph", topics: { [LIVE]: "ephemeral" } })
    let started = 0
    let finished = 0
    const sub = yield* inScope(b.subscribe(Live, () =>
      Effect.suspend(() => {
        started++
        return Effect.sleep("300 millis").pipe(Effect.andThen(Effect.sync(() => void finished++)))
      }), { concurrency: 1, drainTimeout: "5 seconds" }))
    for (let i = 0; i < 3; i++) yield* b.publish(Live, { assetId: `d-${i}`, symbol: "X" })
    yield* waitFor(() => started === 1, "the first handler runs")
    yield* sub.close
    // Within the drain budget, the buffered events ran too.
    assert.equal(finished, 3)
    assert.deepEqual(yield* transport.deadLetters!, [])
    // With no budget, the running one is interrupted and the rest were never started: every one is a dead letter.
    const quick = yield* inScope(b.subscribe(Live, () => Effect.never, { concurrency: 1, drainTimeout: "1 millis" }))
    for (let i = 0; i < 3; i++) yield* b.publish(Live, { assetId: `q-${i}`, symbol: "X" })
    yield* Effect.sleep("300 millis")
    yield* quick.close
    const letters = yield* lettersOnce(transport, 3)
    assert.equal(letters.length, 3, JSON.stringify(letters.map((l) => l.reason)))
    assert.ok(letters.every((l) => l.errorTag === "Interrupted"))
  })))
