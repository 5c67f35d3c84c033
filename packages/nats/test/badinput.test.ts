// Bad input against a real nats-server: a body that is not protobuf is dead-lettered with its bytes and the
// subscription keeps serving; an oversized message, an invalid topic and a subject outside every stream fail with
// precise typed errors; and after each, the bus still publishes and delivers. Each test owns its server.
import { InvalidTopic, PublishError } from "@cqbus/core"
import { AssetCreatedEvent } from "@cqbus/testkit/events"
import { Effect } from "effect"
import assert from "node:assert/strict"
import { test } from "node:test"
import { type Bus, bus, run, server, waitFor } from "./support/nats.ts"

/** A live typed subscription and a check that an event published now is still delivered to it. */
const serving = (b: Bus["bus"], group: string) =>
  Effect.gen(function*() {
    const handled: Array<string> = []
    yield* b.subscribe(AssetCreatedEvent, (event) => Effect.sync(() => void handled.push(event.assetId)), { group })
    let n = 0
    const stillWorks = (what: string) =>
      Effect.gen(function*() {
        const id = `${group}-ok-${++n}`
        yield* b.publish(AssetCreatedEvent, { assetId: id, symbol: "OK" })
        yield* waitFor(() => handled.includes(id), `an event published after ${what} is delivered`)
      })
    return { handled, stillWorks }
  })

test("nats bad input: a body that is not protobuf is dead-lettered with its original bytes and the subscription keeps serving", { timeout: 30_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { bus: b, transport } = yield* bus({ servers: nats.url, source: "badinput" })
    const { handled, stillWorks } = yield* serving(b, "garbage")
    // 0xff…: field 31, wire type 7 (does not exist) — no protobuf decoder accepts it.
    const garbage = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0x0f, 0x00, 0x42])
    const ack = yield* b.publishRaw(AssetCreatedEvent.topic, garbage, { eventId: "garbage-1", headers: { "x-origin": "fuzzer" } })
    yield* stillWorks("the garbage")

    const read = transport.deadLetters
    assert.ok(read !== undefined, "the NATS transport can read dead letters")
    let letters = yield* read
    for (let i = 0; i < 50 && letters.length === 0; i++) {
      yield* Effect.sleep("100 millis")
      letters = yield* read
    }
    assert.equal(letters.length, 1, "one dead letter")
    const letter = letters[0]!
    assert.deepEqual([...letter.body], [...garbage], "the original bytes, unchanged")
    assert.equal(letter.errorTag, "DecodeError")
    assert.match(letter.reason, /cannot decode the body .* as cqc\.events\.v1\.AssetCreated/)
    assert.equal(letter.subject, AssetCreatedEvent.topic)
    assert.equal(letter.sequence, ack.sequence)
    assert.equal(letter.group, "garbage")
    assert.equal(letter.deliveryCount, 1, "dead-lettered at the first delivery, not retried")
    assert.equal(letter.headers["ce-id"], "garbage-1", "the original headers are kept")
    assert.equal(letter.headers["x-origin"], "fuzzer")
    assert.equal(handled.length, 1, "the handler saw only the good event")
    yield* Effect.sleep("500 millis")
    assert.equal((yield* read).length, 1, "the bad message is not redelivered or dead-lettered twice")
  })))

test("nats bad input: messages over the server's max_payload or the stream's max message size fail TooLarge, non-retriable, and the bus keeps working", { timeout: 30_000 }, () =>
  run(Effect.gen(function*() {
    const maxPayload = 16 * 1024
    const nats = yield* server({ maxPayload })
    const { bus: b } = yield* bus({
      servers: nats.url,
      source: "badinput",
      stream: { maxMessageSize: 4 * 1024 }
    })
    const { stillWorks } = yield* serving(b, "sizes")

    // Over the server's max_payload: nats.js refuses it before it leaves the client.
    let started = Date.now()
    const overPayload = yield* Effect.flip(b.publish(AssetCreatedEvent, { assetId: "big", name: "x".repeat(2 * maxPayload) }))
    const overPayloadMs = Date.now() - started
    assert.ok(overPayload instanceof PublishError, `a PublishError, got ${String(overPayload)}`)
    assert.equal(overPayload.reason, "TooLarge", overPayload.message)
    assert.equal(overPayload.retriable, false)
    assert.equal(overPayload.topic, AssetCreatedEvent.topic)
    assert.ok(overPayloadMs < 1_000, `it fails at once (${overPayloadMs} ms), not after the publish timeout`)
    yield* stillWorks("a message over max_payload")

    // Under max_payload but over the stream's max_msg_size: JetStream rejects it (API error 10054).
    started = Date.now()
    const overStream = yield* Effect.flip(b.publishRaw(AssetCreatedEvent.topic, new Uint8Array(8 * 1024)))
    const overStreamMs = Date.now() - started
    assert.ok(overStream instanceof PublishError, `a PublishError, got ${String(overStream)}`)
    assert.equal(overStream.reason, "TooLarge", overStream.message)
    assert.equal(overStream.retriable, false)
    yield* stillWorks("a message over the stream's max message size")
    console.log(`too large: ${JSON.stringify({ overPayload: overPayload.message, overPayloadMs, overStream: overStream.message, overStreamMs })}`)
  })))

test("nats bad input: invalid topics fail with InvalidTopic before anything is sent, and the bus keeps working", { timeout: 30_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { bus: b } = yield* bus({ servers: nats.url, source: "badinput" })
    const { stillWorks } = yield* serving(b, "topics")
    const cases: ReadonlyArray<readonly [string, InvalidTopic["problem"]]> = [
      ["", "Empty"],
      ["cqc.events.v1.asset created", "Whitespace"],
      ["cqc.events..asset_created", "EmptyToken"],
      ["cqc.events.v1.*", "Wildcard"],
      ["cqc.events.v1.>", "Wildcard"],
      ["cqc.events.v1.ässet", "NonAscii"],
      ["cqc.events.v1.a\u0000b", "ControlCharacter"],
      [`cqc.events.v1.${"x".repeat(300)}`, "TooLong"]
    ]
    for (const [topic, problem] of cases) {
      const error = yield* Effect.flip(b.publishRaw(topic, new Uint8Array([1])))
      assert.ok(error instanceof InvalidTopic, `publishRaw(${JSON.stringify(topic)}) fails with InvalidTopic, got ${String(error)}`)
      assert.equal(error.problem, problem, error.message)
      assert.equal(error.topic, topic)
    }
    // Where a pattern is fine, a malformed one still is not.
    const pattern = yield* Effect.flip(b.subscribeRaw("cqc.>.events", () => Effect.void, { group: "bad-pattern" }))
    assert.ok(pattern instanceof InvalidTopic)
    assert.equal(pattern.problem, "MisplacedWildcard")
    // A hand-built EventDef with an invalid topic is caught at publish.
    const handBuilt = { ...AssetCreatedEvent, topic: "cqc.events.v1.bad topic" }
    const typed = yield* Effect.flip(b.publish(handBuilt, { assetId: "x" }))
    assert.ok(typed instanceof InvalidTopic)
    assert.equal(typed.problem, "Whitespace")
    yield* stillWorks("the invalid topics")
  })))

test("nats bad input: a subject outside every stream fails NoStream at once, non-retriable, and the bus keeps working", { timeout: 30_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { bus: b } = yield* bus({ servers: nats.url, source: "badinput", publishTimeout: "30 seconds" })
    const { stillWorks } = yield* serving(b, "nostream")
    const started = Date.now()
    const error = yield* Effect.flip(b.publishRaw("other.events.v1.x", new Uint8Array([1, 2, 3])))
    const took = Date.now() - started
    assert.ok(error instanceof PublishError, `a PublishError, got ${String(error)}`)
    console.log(`no stream: ${JSON.stringify({ reason: error.reason, retriable: error.retriable, tookMs: took, message: error.message })}`)
    assert.equal(error.reason, "NoStream", error.message)
    // No stream listens on the subject: the server answers "no responders" at once, and sending it again cannot
    // help until an operator adds a stream.
    assert.equal(error.retriable, false)
    assert.equal(error.topic, "other.events.v1.x")
    assert.ok(took < 10_000, `NoStream is reported at once (${took} ms), not after the 30 s publish timeout`)
    yield* stillWorks("a publish outside every stream")
  })))
