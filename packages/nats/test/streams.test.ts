// Many streams per bus (issue 13 item 1), against a real nats-server per test: a bus publishes to its own stream and
// consumes from a stream another service created (`OTHER` on `other.events.>`, made and filled with raw nats.js),
// whether that stream is configured (`provisioning: "validateOnly"`) or found on the server; a group on it resumes
// after resubscribing; an own second stream carries its limits to the server; a topic no stream captures fails publish
// (`NoStream`) and subscribe (naming the streams the bus knows); a pattern spanning streams fails naming them; `check`
// asks every stream; the options of `streams` are checked before connecting.
import { HealthError, PublishError, SubscribeError } from "@cqbus/core"
import { NatsError, type NatsEventBusConfig } from "@cqbus/nats"
import { failureOf } from "@cqbus/testkit"
import { DiscardPolicy, jetstream, type JetStreamManager, StorageType } from "@nats-io/jetstream"
import { nanos } from "@nats-io/nats-core"
import { Effect } from "effect"
import assert from "node:assert/strict"
import { test } from "node:test"
import { admin, buildExit, bus, inScope, run, server, type TestServer, waitFor } from "./support/nats.ts"
import { covers, overlaps } from "../src/internal/subjects.ts"

const encode = (text: string): Uint8Array => new TextEncoder().encode(text)
const decode = (bytes: Uint8Array): string => new TextDecoder().decode(bytes)

/** The bus's own stream in these tests. */
const MINE = { name: "MINE", subjects: ["mine.events.>"] } as const

/**
 * "Someone else": stream `OTHER` on `other.events.>` created with raw nats.js and holding `events` (bodies = their
 * names, subject `other.events.<name>`), published raw too.
 */
const otherService = (nats: TestServer, events: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const { jsm, nc } = yield* admin(nats.url)
    yield* Effect.promise(() => jsm.streams.add({ name: "OTHER", subjects: ["other.events.>"] }))
    const js = jetstream(nc)
    const publish = (names: ReadonlyArray<string>) =>
      Effect.promise(async () => {
        for (const name of names) await js.publish(`other.events.${name}`, encode(name))
      })
    yield* publish(events)
    return { jsm, nc, publish }
  })

/** The JetStream API requests the server sees (a plain subscriber on `$JS.API.>` gets a copy of each). */
const apiRequests = (nats: TestServer) =>
  Effect.gen(function*() {
    const { nc } = yield* admin(nats.url)
    const seen: Array<string> = []
    nc.subscribe("$JS.API.>", { callback: (_error, msg) => void seen.push(msg.subject) })
    yield* Effect.promise(() => nc.flush())
    return { seen, flush: Effect.promise(() => nc.flush()) }
  })

/** The stream a consumer lives on, or `undefined` when `name` is on none of `streams`. */
const streamOf = (jsm: JetStreamManager, name: string, streams: ReadonlyArray<string>) =>
  Effect.promise(async () => {
    for (const stream of streams) {
      const found = await jsm.consumers.info(stream, name).then(() => true, () => false)
      if (found) return stream
    }
    return undefined
  })

test("nats streams: a bus publishes to its own stream and consumes from another service's stream it validates", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { jsm } = yield* otherService(nats, ["o1", "o2", "o3"])
    const before = (yield* Effect.promise(() => jsm.streams.info("OTHER"))).config
    const { bus: b, nats: transport, transport: port } = yield* bus({
      servers: nats.url,
      source: "streams",
      stream: MINE,
      streams: [{ name: "OTHER", provisioning: "validateOnly" }]
    })
    assert.deepEqual(transport.streams, ["MINE", "OTHER"])

    const own: Array<string> = []
    const read: Array<string> = []
    yield* b.subscribeRaw("mine.events.>", (bytes) => Effect.sync(() => void own.push(decode(bytes))), { group: "own" })
    yield* b.subscribeRaw("other.events.>", (bytes, d) => Effect.sync(() => void read.push(`${d.topic}=${decode(bytes)}`)), { group: "reader" })
    const ack = yield* b.publishRaw("mine.events.created", encode("m1"))
    assert.equal(ack.stream, "MINE")
    // A bus may publish into the other stream too: JetStream routes by subject.
    const into = yield* b.publishRaw("other.events.o4", encode("o4"))
    assert.equal(into.stream, "OTHER")
    yield* waitFor(() => own.length === 1 && read.length === 4, "the own event and the four of OTHER are handled", 15_000, () => JSON.stringify({ own, read }))
    assert.deepEqual(own, ["m1"])
    assert.deepEqual([...read].sort(), ["other.events.o1=o1", "other.events.o2=o2", "other.events.o3=o3", "other.events.o4=o4"])

    assert.equal(yield* streamOf(jsm, "reader", ["MINE", "OTHER"]), "OTHER", "the group's consumer lives on OTHER")
    assert.equal(yield* streamOf(jsm, "own", ["MINE", "OTHER"]), "MINE")
    const after = (yield* Effect.promise(() => jsm.streams.info("OTHER"))).config
    assert.deepEqual(after, before, "validateOnly changed nothing on OTHER")
    // The consumers capability reads each consumer on its own stream.
    const lag = yield* port.consumers!
    assert.deepEqual(lag.map((c) => c.group).sort(), ["own", "reader"])
    yield* b.check
  })))

test("nats streams: validateOnly fails start-up naming a differing field, or a missing stream", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    yield* otherService(nats, [])
    const differs = failureOf(yield* buildExit({
      servers: nats.url,
      stream: MINE,
      streams: [{ name: "OTHER", provisioning: "validateOnly", subjects: ["other.events.>"], maxMessages: 5 }]
    }))
    assert.ok(differs instanceof NatsError, String(differs))
    console.log(`validateOnly: ${differs.message}`)
    assert.equal(differs.reason, "Provision")
    assert.equal(differs.stream, "OTHER")
    assert.match(differs.message, /stream OTHER differs from the configuration \(provisioning: validateOnly\): max_msgs: -1 → 5/)
    const missing = failureOf(yield* buildExit({
      servers: nats.url,
      stream: MINE,
      streams: [{ name: "ELSEWHERE", provisioning: "validateOnly" }]
    }))
    assert.ok(missing instanceof NatsError && missing.reason === "Provision", String(missing))
    assert.equal(missing.stream, "ELSEWHERE")
    assert.match(missing.message, /stream ELSEWHERE does not exist/)
    // The same stream validated with matching fields starts.
    yield* bus({
      servers: nats.url,
      stream: MINE,
      streams: [{ name: "OTHER", provisioning: "validateOnly", subjects: ["other.events.>"], storage: "file" }]
    })
  })))

test("nats streams: a stream the bus does not know is found on the server once per topic", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { jsm } = yield* otherService(nats, ["a", "b"])
    const { bus: b, nats: transport } = yield* bus({ servers: nats.url, source: "streams", stream: MINE })
    assert.deepEqual(transport.streams, ["MINE"])
    const api = yield* apiRequests(nats)
    const exact: Array<string> = []
    const pattern: Array<string> = []
    yield* b.subscribeRaw("other.events.a", (bytes) => Effect.sync(() => void exact.push(decode(bytes))), { group: "exact" })
    yield* b.subscribeRaw("other.events.*", (bytes) => Effect.sync(() => void pattern.push(decode(bytes))), { group: "pattern" })
    yield* waitFor(() => exact.length === 1 && pattern.length === 2, "both subscriptions read OTHER")
    assert.deepEqual(exact, ["a"])
    assert.deepEqual([...pattern].sort(), ["a", "b"])
    assert.equal(yield* streamOf(jsm, "exact", ["MINE", "OTHER"]), "OTHER")
    // The answer is cached: a second subscription to the same topic asks nothing more.
    yield* b.subscribeRaw("other.events.a", () => Effect.void, { group: "exact-2" })
    yield* api.flush
    const lookups = api.seen.filter((subject) => subject === "$JS.API.STREAM.LIST")
    console.log(`lookups: ${JSON.stringify(lookups)}`)
    assert.equal(lookups.length, 2, `one lookup per topic (other.events.a, other.events.*): ${JSON.stringify(api.seen)}`)
    // A topic of the bus's own stream needs no lookup at all.
    yield* b.subscribeRaw("mine.events.*", () => Effect.void)
    yield* api.flush
    assert.equal(api.seen.filter((subject) => subject === "$JS.API.STREAM.LIST").length, 2)
  })))

test("nats streams: a group on another service's stream resumes where it was after resubscribing", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { publish } = yield* otherService(nats, ["r1", "r2", "r3"])
    const { bus: b } = yield* bus({
      servers: nats.url,
      source: "streams",
      stream: MINE,
      streams: [{ name: "OTHER", provisioning: "validateOnly" }]
    })
    const handled: Array<string> = []
    const subscribe = b.subscribeRaw("other.events.>", (bytes) => Effect.sync(() => void handled.push(decode(bytes))), { group: "resume" })
    const first = yield* inScope(subscribe)
    yield* waitFor(() => handled.length === 3, "the first three are handled")
    yield* first.close
    yield* publish(["r4", "r5"])
    yield* subscribe
    yield* waitFor(() => handled.length >= 5, "the two published while away are handled")
    // Time for a redelivery of r1..r3 to show, had the group not resumed where it was.
    yield* Effect.sleep("500 millis")
    assert.deepEqual([...handled].sort(), ["r1", "r2", "r3", "r4", "r5"], "each once: the group resumed after r3")
  })))

test("nats streams: an own second stream carries its limits to the server", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { bus: b, nats: transport } = yield* bus({
      servers: nats.url,
      stream: MINE,
      streams: [{
        name: "LIMITED",
        subjects: ["limited.>"],
        maxAge: "2 hours",
        maxMessages: 100,
        maxBytes: 1_000_000,
        maxMessageSize: 512,
        discard: "new",
        duplicateWindow: "30 seconds",
        storage: "memory",
        replicas: 1
      }]
    })
    assert.deepEqual(transport.streams, ["MINE", "LIMITED"])
    const { jsm } = yield* admin(nats.url)
    const config = (yield* Effect.promise(() => jsm.streams.info("LIMITED"))).config
    assert.deepEqual(config.subjects, ["limited.>"])
    assert.equal(config.max_age, nanos(2 * 60 * 60 * 1000))
    assert.equal(config.max_msgs, 100)
    assert.equal(config.max_bytes, 1_000_000)
    assert.equal(config.max_msg_size, 512)
    assert.equal(config.discard, DiscardPolicy.New)
    assert.equal(config.duplicate_window, nanos(30_000))
    assert.equal(config.storage, StorageType.Memory)
    assert.equal(config.num_replicas, 1)
    // The main stream keeps the server's defaults: limits are per stream.
    const main = (yield* Effect.promise(() => jsm.streams.info("MINE"))).config
    assert.equal(main.max_msg_size, -1)
    assert.equal(main.storage, StorageType.File)
    // The limits act: a message over the stream's max message size is refused by that stream only.
    const ack = yield* b.publishRaw("limited.small", new Uint8Array(100))
    assert.equal(ack.stream, "LIMITED")
    const big = yield* Effect.flip(b.publishRaw("limited.big", new Uint8Array(1000)))
    assert.ok(big instanceof PublishError)
    assert.equal(big.reason, "TooLarge", big.message)
    assert.equal((yield* b.publishRaw("mine.events.big", new Uint8Array(1000))).stream, "MINE")
    // Restarting the bus with one limit changed updates that stream (createOrUpdate).
    yield* Effect.scoped(bus({ servers: nats.url, stream: MINE, streams: [{ name: "LIMITED", subjects: ["limited.>"], maxMessages: 200 }] }))
    assert.equal((yield* Effect.promise(() => jsm.streams.info("LIMITED"))).config.max_msgs, 200)
  })))

test("nats streams: a topic no stream captures fails publish NoStream and subscribe naming the known streams", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    yield* otherService(nats, [])
    const { bus: b } = yield* bus({
      servers: nats.url,
      stream: MINE,
      streams: [{ name: "OTHER", provisioning: "validateOnly" }]
    })
    const publish = yield* Effect.flip(b.publishRaw("nowhere.events.x", encode("x")))
    assert.ok(publish instanceof PublishError)
    console.log(`publish: ${publish.message}`)
    assert.equal(publish.reason, "NoStream")
    assert.match(publish.message, /no stream captures this topic/)
    assert.match(publish.message, /the bus's streams, or stream\.subjects/)

    const subscribe = yield* Effect.flip(b.subscribeRaw("nowhere.events.x", () => Effect.void, { group: "g" }))
    assert.ok(subscribe instanceof SubscribeError)
    console.log(`subscribe: ${subscribe.message}`)
    assert.equal(subscribe.reason, "InvalidOptions")
    assert.equal(subscribe.topic, "nowhere.events.x")
    assert.match(subscribe.message, /^cannot subscribe to nowhere\.events\.x: no stream captures it/)
    assert.match(subscribe.message, /stream MINE \(subjects mine\.events\.>\), stream OTHER \(subjects other\.events\.>\)/)
    assert.match(subscribe.message, /the bus's streams, or stream\.subjects/)

    // A pattern across two streams cannot be one consumer: refused naming both.
    const spans = yield* Effect.flip(b.subscribeRaw("*.events.>", () => Effect.void))
    assert.ok(spans instanceof SubscribeError)
    console.log(`spans: ${spans.message}`)
    assert.equal(spans.reason, "InvalidOptions")
    assert.match(spans.message, /it spans 2 streams: stream (MINE|OTHER) .*stream (MINE|OTHER) /)
    assert.match(spans.message, /nats-server 2\.9 has no consumer across streams/)
  })))

test("nats streams: check asks every stream and names the one that fails", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { jsm } = yield* otherService(nats, [])
    const { bus: b } = yield* bus({ servers: nats.url, stream: MINE, streams: [{ name: "OTHER", provisioning: "validateOnly" }] })
    yield* b.check
    yield* Effect.promise(() => jsm.streams.delete("OTHER"))
    const error = yield* Effect.flip(b.check)
    assert.ok(error instanceof HealthError)
    console.log(`check: ${error.message}`)
    assert.equal(error.component, "stream OTHER")
    assert.match(error.message, /^stream OTHER: .*not found/i)
  })))

/** Nothing listens on port 1: a configuration that got past the checks would fail with reason `Connect`. */
const NOWHERE = "nats://127.0.0.1:1"

test("nats streams: the options of streams are checked before connecting", { timeout: 60_000 }, async () => {
  const cases: ReadonlyArray<readonly [NatsEventBusConfig, RegExp]> = [
    [
      { streams: [{ name: "CQC_EVENTS", subjects: ["x.>"] }] },
      /streams\[0\] and stream both name the stream CQC_EVENTS/
    ],
    [
      { streams: [{ name: "A", subjects: ["a.>"] }, { name: "A", subjects: ["b.>"] }] },
      /streams\[1\] and streams\[0\] both name the stream A/
    ],
    [{ streams: [{ name: "CQC_DLQ", subjects: ["a.>"] }] }, /deadLetters\.stream and streams\[0\] both name the stream CQC_DLQ/],
    [
      { streams: [{ name: "A", subjects: ["cqc.events.v1.x"] }] },
      /the subjects of streams\[0\] \(stream A: cqc\.events\.v1\.x\) overlap with those of stream \(stream CQC_EVENTS: cqc\.events\.v1\.>\)/
    ],
    [
      { stream: MINE, streams: [{ name: "A", subjects: ["a.*.x"] }, { name: "B", subjects: ["b.>", "a.b.>"] }] },
      /streams\[1\] \(stream B: a\.b\.>\) overlap with those of streams\[0\] \(stream A: a\.\*\.x\)/
    ],
    [{ streams: [{ subjects: ["a.>"] } as never] }, /streams\[0\]\.name is required/],
    [{ streams: [{ name: "A", provisioning: "skip" }] }, /streams\[0\]\.subjects is required with provisioning "skip"/],
    [{ streams: [{ name: "A" }] }, /streams\[0\]\.subjects is required with provisioning "createOrUpdate"/],
    [{ provisioning: "createOnly", streams: [{ name: "A" }] }, /streams\[0\]\.subjects is required with provisioning "createOnly"/],
    [{ streams: [{ name: "A", subjects: ["a.>"], maxAge: "50 millis" }] }, /streams\[0\]\.maxAge must be a duration from 100ms/],
    [{ streams: [{ name: "A.B", subjects: ["a.>"] }] }, /streams\[0\]\.name must be a name/],
    [{ streams: [{ name: "A", subjects: [] }] }, /streams\[0\]\.subjects must be a non-empty list/],
    [{ streams: [{ name: "A", subjects: ["a.>"], provisioning: "create" as never }] }, /streams\[0\]\.provisioning must be one of/],
    [{ streams: { name: "A" } as never }, /streams must be a list/]
  ]
  for (const [config, text] of cases) {
    const error = failureOf(await Effect.runPromise(buildExit({ servers: NOWHERE, ...config })))
    assert.ok(error instanceof NatsError, `${JSON.stringify(config)}: a NatsError, got ${String(error)}`)
    assert.equal(error.reason, "Config", `${JSON.stringify(config)}: reason Config, got ${error.message}`)
    assert.match(error.message, text)
  }
  // Valid: disjoint subjects, a validated stream without subjects (read from the server), the bus's "validateOnly".
  for (
    const config of [
      { streams: [{ name: "A", subjects: ["cqc.events.v2.>"] }, { name: "B", provisioning: "validateOnly" }] },
      { provisioning: "validateOnly", streams: [{ name: "B" }] }
    ] satisfies ReadonlyArray<NatsEventBusConfig>
  ) {
    const error = failureOf(await Effect.runPromise(buildExit({ servers: NOWHERE, ...config })))
    assert.ok(error instanceof NatsError && error.reason === "Connect", `${JSON.stringify(config)}: past the checks, got ${String(error)}`)
  }
})

test("subjects: covers and overlaps, token by token", () => {
  const covered: ReadonlyArray<readonly [string, string, boolean]> = [
    ["cqc.events.v1.>", "cqc.events.v1.*", true],
    ["cqc.events.v1.>", "cqc.events.v1.x", true],
    ["cqc.events.v1.>", "cqc.events.v1.x.y", true],
    ["cqc.events.v1.>", "cqc.events.v1.>", true],
    ["cqc.events.v1.>", "cqc.events.v1", false],
    ["cqc.events.v1.>", "cqc.events.>", false],
    ["cqc.events.v1.*", "cqc.events.v1.>", false],
    ["cqc.events.v1.*", "cqc.events.v1.x", true],
    ["cqc.events.v1.*", "cqc.events.v1.x.y", false],
    ["cqc.*.v1.x", "cqc.events.v1.x", true],
    ["cqc.events.v1.x", "cqc.*.v1.x", false],
    ["a.b", "a.b", true],
    ["a.b", "a.c", false],
    [">", "anything.at.all", true]
  ]
  for (const [outer, inner, expected] of covered) assert.equal(covers(outer, inner), expected, `covers(${outer}, ${inner})`)
  const overlapping: ReadonlyArray<readonly [string, string, boolean]> = [
    ["cqc.*.x", "cqc.events.>", true],
    ["a.*.x", "a.b.>", true],
    ["a.b", "a.c", false],
    ["a.>", "a", false],
    ["a.*", "a.b.c", false],
    ["a.*.c", "*.b.*", true],
    ["mine.events.>", "other.events.>", false]
  ]
  for (const [a, b, expected] of overlapping) {
    assert.equal(overlaps(a, b), expected, `overlaps(${a}, ${b})`)
    assert.equal(overlaps(b, a), expected, `overlaps(${b}, ${a})`)
  }
})
