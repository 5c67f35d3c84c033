// The wire contract with services that do not use cqbus (DESIGN §5, docs/wire-format.md), checked with the plain
// nats.js JetStream client on one side and a cqbus bus on the other, against a real nats-server per test: a bare
// protobuf body with no headers is delivered typed; what cqbus publishes is exactly the protobuf bytes plus the
// pinned CloudEvents headers and Nats-Msg-Id; a Go-style publisher's capitalised header names are read.
import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf"
import type { Delivery } from "@cqbus/core"
import { AssetCreatedEvent, AssetCreatedSchema, AssetClass, type AssetCreated } from "@cqbus/testkit/events"
import { jetstream, jetstreamManager } from "@nats-io/jetstream"
import { headers as natsHeaders, type NatsConnection } from "@nats-io/nats-core"
import { connect } from "@nats-io/transport-node"
import { Effect } from "effect"
import assert from "node:assert/strict"
import { test } from "node:test"
import { bus, run, server, waitFor } from "./support/nats.ts"

/** A plain nats.js connection to the test server, closed with the test's scope. */
const plain = (url: string) =>
  Effect.acquireRelease(
    Effect.promise(() => connect({ servers: url })),
    (nc: NatsConnection) => Effect.promise(() => nc.close())
  )

const sample: MessageInitShape<typeof AssetCreatedSchema> = {
  assetId: "asset-7f3c",
  symbol: "AAPL",
  name: "Apple Inc.",
  assetClass: AssetClass.EQUITY,
  quoteCurrency: "USD",
  decimals: 2,
  tags: ["tech", "sp500"],
  attributes: { isin: "US0378331005" },
  createdBy: "service:go-catalog"
}

test("nats interop: a bare protobuf body published by the plain nats.js client, without headers, is delivered as a typed AssetCreated", { timeout: 30_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { bus: b } = yield* bus({ servers: nats.url, source: "interop" })
    const seen: Array<{ readonly event: AssetCreated; readonly delivery: Delivery }> = []
    yield* b.subscribe(AssetCreatedEvent, (event, delivery) => Effect.sync(() => void seen.push({ event, delivery })), {
      group: "from-plain"
    })

    const nc = yield* plain(nats.url)
    const body = toBinary(AssetCreatedSchema, create(AssetCreatedSchema, sample))
    const ack = yield* Effect.promise(() => jetstream(nc).publish("cqc.events.v1.asset_created", body))
    assert.equal(ack.stream, "CQC_EVENTS", "the cqbus stream captures the CQC subject")

    yield* waitFor(() => seen.length === 1, "the headerless message is delivered")
    yield* Effect.sleep("200 millis")
    assert.equal(seen.length, 1)
    const { delivery, event } = seen[0]!
    assert.equal(event.$typeName, "cqc.events.v1.AssetCreated")
    assert.equal(event.assetId, sample.assetId)
    assert.equal(event.symbol, sample.symbol)
    assert.equal(event.name, sample.name)
    assert.equal(event.assetClass, AssetClass.EQUITY)
    assert.equal(event.decimals, 2)
    assert.deepEqual(event.tags, ["tech", "sp500"])
    assert.deepEqual(event.attributes, { isin: "US0378331005" })
    assert.equal(event.createdBy, sample.createdBy)
    assert.deepEqual(delivery.headers, {}, "no headers were invented")
    assert.equal(delivery.subject, "cqc.events.v1.asset_created")
    assert.equal(delivery.sequence, ack.seq)
    assert.equal(delivery.eventId, `seq:${ack.seq}`, "a headerless message's event id comes from its stream sequence")
    assert.equal(delivery.key, sample.assetId, "the event definition's key applies to a headerless message")
    assert.ok(delivery.publishedAt instanceof Date && Math.abs(delivery.publishedAt.getTime() - Date.now()) < 60_000,
      "the publish time is the stream's timestamp")
  })))

test("nats interop: a cqbus-published event, read with the plain client, is exactly the protobuf bytes with Nats-Msg-Id and the CloudEvents headers", { timeout: 30_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { bus: b } = yield* bus({ servers: nats.url, source: "pricing-service" })
    const before = Date.now()
    const ack = yield* b.publish(AssetCreatedEvent, sample, { eventId: "evt-interop-1", correlationId: "req-42" })
    const after = Date.now()

    const nc = yield* plain(nats.url)
    const jsm = yield* Effect.promise(() => jetstreamManager(nc))
    const stored = yield* Effect.promise(() => jsm.streams.getMessage(ack.stream, { seq: ack.sequence }))
    assert.ok(stored !== null, "the message is in the stream")
    assert.equal(stored.subject, "cqc.events.v1.asset_created", "subject = topic, nothing added")
    assert.deepEqual(
      [...stored.data],
      [...toBinary(AssetCreatedSchema, create(AssetCreatedSchema, sample))],
      "the body is the bare protobuf encoding"
    )
    assert.equal(fromBinary(AssetCreatedSchema, stored.data).symbol, "AAPL", "a Go service decodes it with its own schema")

    const h = stored.header
    const names = [...h.keys()].sort()
    assert.deepEqual(names, [
      "Nats-Msg-Id",
      "ce-correlationid",
      "ce-id",
      "ce-partitionkey",
      "ce-source",
      "ce-specversion",
      "ce-time",
      "ce-type",
      "content-type"
    ], "exactly these header names, in this spelling")
    assert.equal(h.get("Nats-Msg-Id"), "evt-interop-1", "Nats-Msg-Id is the event id (JetStream dedupe)")
    assert.equal(h.get("ce-id"), "evt-interop-1")
    assert.equal(h.get("ce-specversion"), "1.0")
    assert.equal(h.get("ce-type"), "cqc.events.v1.AssetCreated", "ce-type is the protobuf full name")
    assert.equal(h.get("ce-source"), "pricing-service")
    assert.equal(h.get("content-type"), "application/protobuf")
    assert.equal(h.get("ce-partitionkey"), "asset-7f3c", "the ordering key")
    assert.equal(h.get("ce-correlationid"), "req-42")
    const time = h.get("ce-time")
    assert.match(time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/, "ce-time is ISO 8601 UTC with milliseconds")
    const at = Date.parse(time)
    assert.ok(at >= before - 5 && at <= after + 5, `ce-time ${time} is the publish time`)

    // Nats-Msg-Id does what it is there for: the same event id again is dropped by the server.
    const again = yield* b.publish(AssetCreatedEvent, sample, { eventId: "evt-interop-1" })
    assert.equal(again.duplicate, true)
    assert.equal(again.sequence, ack.sequence)
    const info = yield* Effect.promise(() => jsm.streams.info(ack.stream))
    assert.equal(info.state.messages, 1, "one stored message for one event id")
  })))

test("nats interop: a Go-style publisher's capitalised header names (Ce-Id, Ce-Type, Content-Type) are read", { timeout: 30_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { bus: b, transport } = yield* bus({ servers: nats.url, source: "interop" })
    const seen: Array<{ readonly event: AssetCreated; readonly delivery: Delivery }> = []
    yield* b.subscribe(AssetCreatedEvent, (event, delivery) => Effect.sync(() => void seen.push({ event, delivery })), {
      group: "from-go"
    })

    const nc = yield* plain(nats.url)
    const js = jetstream(nc)
    const goHeaders = (id: string, type: string) => {
      // What Go's http.Header-style canonicalisation makes of the CloudEvents names.
      const h = natsHeaders()
      h.set("Ce-Specversion", "1.0")
      h.set("Ce-Id", id)
      h.set("Ce-Type", type)
      h.set("Ce-Source", "go-catalog")
      h.set("Ce-Time", "2026-01-02T03:04:05Z")
      h.set("Content-Type", "application/protobuf")
      h.set("Ce-Partitionkey", "asset-go")
      return h
    }
    const body = toBinary(AssetCreatedSchema, create(AssetCreatedSchema, { ...sample, assetId: "asset-go" }))
    yield* Effect.promise(() =>
      js.publish("cqc.events.v1.asset_created", body, { msgID: "go-1", headers: goHeaders("go-1", "cqc.events.v1.AssetCreated") })
    )
    // A Go message whose Ce-Type names another type: the capitalised header must be honoured, so this one is a
    // decode error (dead-lettered), not "decoded" into garbage fields.
    const priceBody = new Uint8Array([0x1a, 0x03, 0x31, 0x2e, 0x35])
    yield* Effect.promise(() =>
      js.publish("cqc.events.v1.asset_created", priceBody, { msgID: "go-2", headers: goHeaders("go-2", "cqc.events.v1.PriceUpdated") })
    )

    yield* waitFor(() => seen.length === 1, "the Go-style event is delivered")
    const { delivery, event } = seen[0]!
    assert.equal(event.assetId, "asset-go")
    assert.equal(delivery.eventId, "go-1", "Ce-Id is the event id")
    assert.equal(delivery.headers["ce-id"], "go-1", "incoming names are lower-cased")
    assert.equal(delivery.headers["ce-type"], "cqc.events.v1.AssetCreated")
    assert.equal(delivery.headers["ce-source"], "go-catalog")
    assert.equal(delivery.headers["ce-specversion"], "1.0")
    assert.equal(delivery.headers["content-type"], "application/protobuf")
    assert.equal(delivery.headers["Nats-Msg-Id"], "go-1", "NATS's own headers keep their spelling")
    assert.equal(delivery.headers["Ce-Id"], undefined)
    assert.equal(delivery.publishedAt?.toISOString(), "2026-01-02T03:04:05.000Z", "Ce-Time is the publish time")
    assert.equal(delivery.key, "asset-go")

    const readLetters = transport.deadLetters
    assert.ok(readLetters !== undefined)
    let letters = yield* readLetters
    const deadline = Date.now() + 10_000
    while (letters.length === 0 && Date.now() < deadline) {
      yield* Effect.sleep("100 millis")
      letters = yield* readLetters
    }
    assert.equal(letters.length, 1, "the mistyped Go message is dead-lettered")
    assert.equal(letters[0]!.errorTag, "DecodeError")
    assert.match(letters[0]!.reason, /cqc\.events\.v1\.PriceUpdated/)
    assert.deepEqual([...letters[0]!.body], [...priceBody])
    assert.equal(seen.length, 1, "the mistyped message never reached the handler")
  })))
