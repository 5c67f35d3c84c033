// The NATS publish engine (packages/nats/src/internal/publisher.ts) against real nats-server processes: every publish
// is individually acknowledged with the sequence the stream holds it at, duplicates are flagged, bad messages fail
// with their typed errors without disturbing their neighbours in the window, the in-flight table is bounded, deadlines
// hold (TestClock), a SIGKILLed server fails the affected publishes retriably within their deadline and publishing
// resumes after the restart with nothing reported published that the stream lacks, and a closed bus or connection
// rejects publishes. Each test owns its server.
import { type InvalidTopic, type PublishAck, PublishError } from "@cqbus/core"
import { AssetCreatedEvent, PriceUpdatedEvent } from "@cqbus/testkit/events"
import { jetstream, jetstreamManager } from "@nats-io/jetstream"
import { headers as natsHeaders, InvalidArgumentError, type MsgHdrsImpl, type NatsConnection } from "@nats-io/nats-core"
import { connect } from "@nats-io/transport-node"
import { Effect, Fiber, Redacted, Result } from "effect"
import { TestClock } from "effect/testing"
import assert from "node:assert/strict"
import { test } from "node:test"
import { encodeHeaders } from "../src/internal/headers.ts"
import { readPubAck } from "../src/internal/pubAck.ts"
import { bus, inScope, run, server, waitFor } from "./support/nats.ts"

/** A plain nats.js connection to the test server, closed with the test's scope. */
const plain = (url: string, options: { readonly user?: string; readonly pass?: string } = {}) =>
  Effect.acquireRelease(
    Effect.promise(() => connect({ servers: url, ...options })),
    (nc: NatsConnection) => Effect.promise(() => nc.isClosed() ? Promise.resolve() : nc.close())
  )

/** Every message of a stream, read with the plain client: event id (`Nats-Msg-Id`) → stream sequence. */
const storedIds = (nc: NatsConnection, stream: string) =>
  Effect.promise(async () => {
    const jsm = await jetstreamManager(nc)
    const total = (await jsm.streams.info(stream)).state.messages
    const ids = new Map<string, number>()
    if (total === 0) return ids
    const reader = await jetstream(nc).consumers.get(stream)
    const batch = await reader.fetch({ max_messages: total, expires: 5_000 })
    for await (const msg of batch) {
      ids.set(msg.headers?.get("Nats-Msg-Id") ?? "", msg.seq)
      if (ids.size >= total) break
    }
    return ids
  })

test("nats publisher: the header block is byte for byte what nats.js encodes, for ASCII, non-ASCII, padded and empty values", () => {
  const reference = (headers: Record<string, string>, msgId: string): Uint8Array => {
    const h = natsHeaders()
    for (const name in headers) h.append(name, headers[name]!)
    h.append("Nats-Msg-Id", msgId)
    return (h as MsgHdrsImpl).encode()
  }
  const envelope = {
    "ce-specversion": "1.0",
    "ce-id": "0b8e6b5e-2f4e-4a51-9d7e-6a4f7f0c3c11",
    "ce-source": "pricing",
    "ce-time": "2026-12-01T19:00:00.000Z",
    "ce-type": "cqc.events.v1.PriceUpdated",
    "content-type": "application/protobuf",
    "ce-partitionkey": "asset-1"
  }
  const cases: ReadonlyArray<readonly [string, Record<string, string>, string]> = [
    ["ASCII", envelope, "evt-1"],
    ["a non-ASCII value", { ...envelope, "ce-partitionkey": "Zürich-€" }, "evt-2"],
    ["a value with surrounding whitespace (trimmed)", { ...envelope, "x-note": "  padded\t" }, "evt-3"],
    ["an empty value", { ...envelope, "x-empty": "" }, "evt-4"],
    ["a non-ASCII event id", envelope, "évt-5"]
  ]
  for (const [what, headers, msgId] of cases) {
    const ours = encodeHeaders(headers, msgId)
    assert.deepEqual([...(ours as MsgHdrsImpl).encode()], [...reference(headers, msgId)], what)
    assert.equal(ours.get("Nats-Msg-Id"), msgId, `${what}: the MsgHdrs view reads the block`)
  }
  assert.throws(() => encodeHeaders({ ...envelope, "x-bad": "a\r\nInjected: 1" }, "evt"), InvalidArgumentError,
    "a line break in a value is refused, as nats.js refuses it")
  assert.throws(() => encodeHeaders({ "bad name": "x" }, "evt"), InvalidArgumentError, "so is a space in a name")
  assert.throws(() => encodeHeaders(envelope, "evt\n"), InvalidArgumentError, "and a line break in the event id")
})

test("nats publisher: a PubAck is read as JSON.parse reads it, and anything unusual is left to JSON.parse", () => {
  const usual = [
    '{"stream":"CQC_EVENTS", "seq":1}',
    '{"stream":"CQC_EVENTS", "seq": 4711,"duplicate": true}',
    '{"stream":"CQC_EVENTS","seq":9007199254740,"duplicate":false}',
    '{"stream":"OTHER", "domain":"hub", "seq":12}',
    '{"stream":"CQC_EVENTS", "seq":2}'
  ]
  for (const text of usual) {
    const json = JSON.parse(text) as { stream: string; seq: number; duplicate?: boolean }
    assert.deepEqual(readPubAck(text), { stream: json.stream, seq: json.seq, duplicate: json.duplicate === true }, text)
  }
  const unusual = [
    '{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"},"stream":"S","seq":0}',
    '{"stream":"A\\"B", "seq":1}',
    '{"stream":"", "seq":1}',
    '{"stream":"S"}',
    '{"stream":"S", "seq":"7"}',
    '{"stream":"S", "seq":12345678901234567}',
    "[]",
    ""
  ]
  for (const text of unusual) assert.equal(readPubAck(text), undefined, text)
})

const ids = (n: number, prefix: string) => Array.from({ length: n }, (_, i) => `${prefix}-${i}`)

test("nats publisher: every publish in a window is individually acknowledged with the sequence the stream holds it at", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { bus: b, nats: transport } = yield* bus({ servers: nats.url, source: "publisher" })
    const total = 3_000
    const eventIds = ids(total, "ack")
    const results = yield* b.publishAll(
      PriceUpdatedEvent,
      eventIds.map((_, i) => ({ assetId: `a${i % 7}`, price: String(i) })),
      { window: 256, publish: (_, i) => ({ eventId: eventIds[i]! }) }
    )
    const acks = results.map((r, i) => {
      assert.ok(Result.isSuccess(r), `publish ${i} succeeded: ${Result.isFailure(r) ? String(r.failure) : ""}`)
      return r.success
    })
    assert.ok(acks.every((a) => a.stream === transport.stream && a.topic === PriceUpdatedEvent.topic && !a.duplicate))
    assert.deepEqual(
      acks.map((a) => a.sequence).sort((x, y) => x - y),
      Array.from({ length: total }, (_, i) => i + 1),
      "one distinct sequence per publish, 1..N on a fresh stream"
    )
    const nc = yield* plain(nats.url)
    const stored = yield* storedIds(nc, transport.stream)
    assert.equal(stored.size, total, "the stream holds exactly the published messages")
    const wrong = eventIds.filter((id, i) => stored.get(id) !== acks[i]!.sequence)
    assert.deepEqual(wrong.slice(0, 5), [], "each PubAck names the sequence its own message is stored at")
  })))

test("nats publisher: an event id seen inside the dedupe window is flagged duplicate with the first one's sequence", { timeout: 30_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { bus: b, nats: transport } = yield* bus({ servers: nats.url, source: "publisher" })
    // 100 publishes of 50 event ids in one window: the second of each pair is in flight together with the first.
    const eventIds = Array.from({ length: 100 }, (_, i) => `dup-${i % 50}`)
    const first = yield* b.publishAll(AssetCreatedEvent, eventIds.map((id) => ({ assetId: id })), {
      window: 100,
      publish: (_, i) => ({ eventId: eventIds[i]! })
    })
    const acks = first.map((r) => Result.getOrThrow(r))
    assert.deepEqual(acks.map((a) => a.duplicate), eventIds.map((_, i) => i >= 50), "the repeats, and only they, are duplicates")
    for (let i = 50; i < 100; i++) assert.equal(acks[i]!.sequence, acks[i - 50]!.sequence, `${eventIds[i]} has its first sequence`)
    // Again, in a later window: every one a duplicate.
    const again = yield* b.publishAll(AssetCreatedEvent, eventIds.slice(0, 50).map((id) => ({ assetId: id })), {
      window: 16,
      publish: (_, i) => ({ eventId: eventIds[i]! })
    })
    assert.ok(again.every((r) => Result.isSuccess(r) && r.success.duplicate), "a later publish of the same ids is a duplicate")
    const nc = yield* plain(nats.url)
    assert.equal((yield* storedIds(nc, transport.stream)).size, 50, "one stored message per event id")
  })))

test("nats publisher: too large, outside every stream, wrong last sequence, a denied subject and a bad header fail typed without disturbing their neighbours in the window", { timeout: 30_000 }, () =>
  run(Effect.gen(function*() {
    const maxPayload = 16 * 1024
    const nats = yield* server({
      maxPayload,
      config: [
        "authorization {",
        "  users = [{ user: app, password: secret, permissions: {",
        "    publish: { allow: [\">\"], deny: [\"cqc.events.v1.forbidden\"] }, subscribe: { allow: [\">\"] } } }]",
        "}"
      ].join("\n")
    })
    const { bus: b, nats: transport } = yield* bus({
      servers: nats.url,
      user: "app",
      password: Redacted.make("secret"),
      source: "publisher",
      stream: { maxMessageSize: 4 * 1024 }
    })
    const topic = AssetCreatedEvent.topic
    const good = (i: number) => b.publishRaw(topic, new Uint8Array([i]), { eventId: `good-${i}` })
    const cases = [
      good(0),
      b.publishRaw(topic, new Uint8Array(2 * maxPayload)), // over max_payload: refused before it is sent
      good(1),
      b.publishRaw(topic, new Uint8Array(8 * 1024)), // over the stream's max_msg_size: JetStream 10054
      good(2),
      b.publishRaw("other.events.v1.x", new Uint8Array([1])), // no stream: 503 no responders
      good(3),
      b.publishRaw(topic, new Uint8Array([9]), { headers: { "Nats-Expected-Last-Sequence": "999" } }), // JetStream 10071
      good(4),
      b.publishRaw("cqc.events.v1.forbidden", new Uint8Array([1])), // -ERR Permissions Violation
      good(5),
      b.publishRaw(topic, new Uint8Array([1]), { headers: { "x-note": "two\r\nlines" } }), // refused before it is sent
      good(6)
    ]
    const results = yield* Effect.all(cases.map((c) => Effect.result(c)), { concurrency: "unbounded" })
    const failure = (i: number) => {
      const r = results[i]!
      assert.ok(Result.isFailure(r) && r.failure instanceof PublishError, `case ${i} fails with a PublishError`)
      return r.failure
    }
    const expected: ReadonlyArray<readonly [number, PublishError["reason"]]> = [
      [1, "TooLarge"],
      [3, "TooLarge"],
      [5, "NoStream"],
      [7, "WrongLastSequence"],
      [9, "PermissionDenied"],
      [11, "Encode"]
    ]
    for (const [i, reason] of expected) {
      const error = failure(i)
      assert.equal(error.reason, reason, `case ${i}: ${error.message}`)
      assert.equal(error.retriable, false, `case ${i} is not retriable`)
    }
    const goods = [0, 2, 4, 6, 8, 10, 12].map((i) => {
      const r = results[i]!
      assert.ok(Result.isSuccess(r), `neighbour ${i} was acknowledged: ${Result.isFailure(r) ? String(r.failure) : ""}`)
      return r.success
    })
    assert.equal(new Set(goods.map((a) => a.sequence)).size, goods.length, "each neighbour has its own sequence")
    const nc = yield* plain(nats.url, { user: "app", pass: "secret" })
    const stored = yield* storedIds(nc, transport.stream)
    assert.deepEqual([...stored.keys()].sort(), goods.map((_, i) => `good-${i}`), "only the good messages are stored")
    console.log(`typed failures: ${JSON.stringify(expected.map(([i]) => failure(i).message))}`)
  })))

test("nats publisher: at most maxPendingPublishes publishes await a PubAck at once; the rest wait and all succeed", { timeout: 30_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { bus: b } = yield* bus({ servers: nats.url, source: "publisher", maxPendingPublishes: 8 })
    // A plain subscriber sees each publish (with its reply inbox) and each PubAck the server sends to that inbox; what
    // it has seen published and not yet acknowledged is in flight. The server fans a PubAck out to the spy before the
    // publish it lets through arrives, so the spy's count can only be off by a race of the server's own goroutines
    // (a PubAck seen before its publish, or one publish early), hence the slack in the bound below.
    const spy = yield* plain(nats.url)
    const seen = new Map<string, "published" | "acked">()
    let outstanding = 0
    let most = 0
    spy.subscribe(AssetCreatedEvent.topic, {
      callback: (_e, msg) => {
        const reply = msg.reply ?? ""
        if (seen.get(reply) === "acked") return void seen.delete(reply)
        seen.set(reply, "published")
        most = Math.max(most, ++outstanding)
      }
    })
    spy.subscribe("_INBOX.>", {
      callback: (_e, msg) => {
        if (seen.get(msg.subject) !== "published") return void seen.set(msg.subject, "acked")
        seen.delete(msg.subject)
        outstanding--
      }
    })
    yield* Effect.promise(() => spy.flush())
    const results = yield* b.publishAll(AssetCreatedEvent, Array.from({ length: 2_000 }, (_, i) => ({ assetId: `w${i}` })), {
      window: 256
    })
    assert.equal(results.filter(Result.isSuccess).length, 2_000, "every publish succeeded")
    yield* waitFor(() => seen.size === 0, "the spy saw every publish and its PubAck", 5_000, () => `${seen.size} unmatched`)
    console.log(`bounded window: at most ${most} publishes in flight (maxPendingPublishes 8, caller window 256)`)
    assert.ok(most >= 8, `the engine used its 8 slots (saw at most ${most} in flight)`)
    assert.ok(most <= 10, `no more than the 8 slots were in flight (saw ${most}; without the bound it is up to 256)`)
  })))

test("nats publisher: a publish whose PubAck never comes fails Timeout, retriable, at its deadline (TestClock)", { timeout: 30_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    // Someone listens on the subject but no stream stores it and nobody answers: no 503, no PubAck, ever.
    const listener = yield* plain(nats.url)
    listener.subscribe("other.silent.>", { callback: () => undefined })
    yield* Effect.promise(() => listener.flush())
    yield* Effect.gen(function*() {
      const { bus: b } = yield* bus({ servers: nats.url, source: "publisher", publishTimeout: "2 seconds" })
      let outcome: Result.Result<PublishAck, unknown> | undefined
      const fiber = yield* Effect.forkChild(
        Effect.tap(Effect.result(b.publishRaw("other.silent.x", new Uint8Array([1]))), (r) => Effect.sync(() => (outcome = r)))
      )
      // Real time for the message to reach the server (and for a wrong answer to come back); the deadline is Effect time.
      yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 300)))
      assert.equal(outcome, undefined, "nothing settled the publish before its deadline")
      yield* TestClock.adjust("1500 millis")
      assert.equal(outcome, undefined, "still pending 1.5 s into a 2 s deadline")
      yield* TestClock.adjust("1 second")
      const result = yield* Fiber.join(fiber)
      assert.ok(Result.isFailure(result) && result.failure instanceof PublishError, "a PublishError")
      assert.equal(result.failure.reason, "Timeout", result.failure.message)
      assert.equal(result.failure.retriable, true)
      // The slot is free again: a good publish goes through.
      const later = yield* Effect.forkChild(b.publish(AssetCreatedEvent, { assetId: "after-timeout" }))
      const ack = yield* Fiber.join(later)
      assert.equal(ack.duplicate, false)
    }).pipe(Effect.provide(TestClock.layer()))
  })))

test("nats publisher: a server SIGKILLed mid-window fails the affected publishes retriably within their deadline; publishing resumes after the restart and nothing reported published is missing", { timeout: 90_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const publishTimeout = 2_000
    const { bus: b, nats: transport } = yield* bus({
      servers: nats.url,
      source: "publisher",
      publishTimeout: `${publishTimeout} millis`,
      reconnect: { wait: "100 millis", jitter: "50 millis" }
    })
    const total = 30_000
    interface Outcome {
      readonly id: string
      readonly start: number
      readonly end: number
      readonly result: Result.Result<PublishAck, PublishError | InvalidTopic>
    }
    const outcomes: Array<Outcome> = []
    let acked = 0
    const outages: Array<{ readonly killedAt: number; readonly restartedAt: number }> = []
    const publishOne = (i: number) =>
      Effect.gen(function*() {
        const id = `kill-${i}`
        const start = Date.now()
        const result = yield* Effect.result(b.publish(AssetCreatedEvent, { assetId: String(i) }, { eventId: id }))
        if (Result.isSuccess(result)) acked++
        outcomes.push({ id, start, end: Date.now(), result })
      })
    // Two crashes: a short one (publishes made meanwhile are held and go out after the reconnect) and one longer than
    // the publish timeout (held publishes fail by their deadline, never sent).
    const outage = (after: number, down: number) =>
      Effect.gen(function*() {
        yield* waitFor(() => acked >= after, `${after} events are acked`, 30_000)
        const killedAt = Date.now()
        yield* Effect.promise(() => nats.kill())
        yield* Effect.sleep(down)
        yield* Effect.promise(() => nats.restart())
        outages.push({ killedAt, restartedAt: Date.now() })
      })
    yield* Effect.all([
      Effect.forEach(Array.from({ length: total }, (_, i) => i), publishOne, { concurrency: 512, discard: true }),
      Effect.andThen(outage(total / 4, 300), outage(total / 2, publishTimeout + 500))
    ], { concurrency: 2 })
    assert.equal(outages.length, 2, "the server was killed and restarted twice while publishing")

    const failed = outcomes.filter((o) => Result.isFailure(o.result))
    const errors = failed.map((o) => (o.result as Result.Failure<PublishAck, PublishError | InvalidTopic>).failure)
    const reasons: Record<string, number> = {}
    for (const error of errors) {
      const label = error instanceof PublishError
        ? `${error.reason}${error.retriable ? "" : " (non-retriable)"}${/never sent/.test(error.message) ? " (never sent)" : ""}`
        : error._tag
      reasons[label] = (reasons[label] ?? 0) + 1
    }
    const slowest = Math.max(...outcomes.map((o) => o.end - o.start))
    const [first, second] = outages as [typeof outages[0], typeof outages[0]]
    const heldThrough = outcomes.filter((o) =>
      Result.isSuccess(o.result) && o.start > first.killedAt && o.start < first.restartedAt
    ).length
    const resumed = outcomes.filter((o) => Result.isSuccess(o.result) && o.end > second.restartedAt).length
    console.log(`sigkill mid-window: ${JSON.stringify({ total, failed: failed.length, reasons, slowestMs: slowest, heldThrough, resumed, outagesMs: outages.map((o) => o.restartedAt - o.killedAt) })}`)
    assert.ok(failed.length > 0, "the kills hit publishes in flight (otherwise this test tested nothing)")
    assert.deepEqual(Object.keys(reasons).filter((r) => !/^(NotConnected|Timeout)( \(never sent\))?$/.test(r)), [],
      "every failure is a retriable NotConnected or Timeout PublishError")
    assert.ok((reasons["NotConnected"] ?? 0) > 0, "publishes in flight at a kill failed at once as lost, not at their deadline")
    assert.ok((reasons["NotConnected (never sent)"] ?? 0) > 0, "publishes held through the long outage failed by their deadline")
    assert.ok(slowest <= publishTimeout + 1_000, `every publish ended within its deadline (slowest ${slowest} ms)`)
    assert.ok(heldThrough > 0, "publishes made during the short outage completed after the reconnect")
    assert.ok(resumed > 0, "publishing resumed after the second restart")

    // Retried with the same event ids, the failed ones go through (JetStream drops any that were stored after all).
    const retried = yield* Effect.forEach(failed, (o) =>
      b.publish(AssetCreatedEvent, { assetId: o.id.slice(5) }, { eventId: o.id }), { concurrency: 256 })
    const nc = yield* plain(nats.url)
    const stored = yield* storedIds(nc, transport.stream)
    const missing = outcomes.filter((o) => Result.isSuccess(o.result) && stored.get(o.id) !== o.result.success.sequence)
    assert.deepEqual(missing.slice(0, 5).map((o) => o.id), [], "every publish reported as stored is in the stream at its sequence")
    assert.ok(retried.every((a, i) => stored.get(failed[i]!.id) === a.sequence), "the retried ones too")
    assert.equal(stored.size, total, "every event is stored exactly once")
  })))

test("nats publisher: a closed bus rejects publishes; a connection closed under the bus fails pending and later publishes Closed at once", { timeout: 30_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const scoped = yield* inScope(bus({ servers: nats.url, source: "publisher" }))
    yield* scoped.value.bus.publish(AssetCreatedEvent, { assetId: "before-close" })
    yield* scoped.close
    const afterClose = yield* Effect.flip(scoped.value.bus.publish(AssetCreatedEvent, { assetId: "after-close" }))
    assert.ok(afterClose instanceof PublishError)
    assert.equal(afterClose.reason, "Closed", afterClose.message)
    assert.equal(afterClose.retriable, false)

    // An injected connection that its owner closes while a publish awaits its PubAck (nobody answers this subject).
    const listener = yield* plain(nats.url)
    listener.subscribe("other.silent.>", { callback: () => undefined })
    yield* Effect.promise(() => listener.flush())
    const nc = yield* Effect.promise(() => connect({ servers: nats.url }))
    const { bus: b } = yield* bus({ connection: nc, source: "publisher", publishTimeout: "20 seconds" })
    const pending = yield* Effect.forkChild(Effect.flip(b.publishRaw("other.silent.x", new Uint8Array([1]))))
    yield* Effect.sleep("200 millis")
    const closing = Date.now()
    yield* Effect.promise(() => nc.close())
    const failed = yield* Fiber.join(pending)
    const took = Date.now() - closing
    assert.ok(failed instanceof PublishError)
    assert.equal(failed.reason, "Closed", failed.message)
    assert.equal(failed.retriable, false)
    assert.ok(took < 10_000, `the pending publish failed when the connection closed (${took} ms), not at its 20 s deadline`)
    const later = yield* Effect.flip(b.publish(AssetCreatedEvent, { assetId: "on-closed-connection" }))
    assert.ok(later instanceof PublishError)
    assert.equal(later.reason, "Closed", later.message)
    assert.equal(later.retriable, false)

    // A bus built on a connection that is closed already (no management call with "skip") fails Closed, at once.
    const { bus: onClosed } = yield* bus({ connection: nc, source: "publisher", provisioning: "skip", publishTimeout: "20 seconds" })
    const started = Date.now()
    const refused = yield* Effect.flip(onClosed.publish(AssetCreatedEvent, { assetId: "never" }))
    assert.ok(refused instanceof PublishError)
    assert.equal(refused.reason, "Closed", refused.message)
    assert.equal(refused.retriable, false)
    assert.ok(Date.now() - started < 10_000, "at once, not at the 20 s deadline")
  })))
