// What the NATS layer does to the server at start-up, checked against a real nats-server per test: the stream is
// provisioned with the configured options; `validateOnly` fails at layer build listing the differing fields;
// `createOnly` leaves an existing stream alone; `skip` makes no JetStream management call at all. And a failed
// connection never shows the credentials it was given.
import { PublishError } from "@cqbus/core"
import { failureOf } from "@cqbus/testkit"
import { AssetCreatedEvent } from "@cqbus/testkit/events"
import { RetentionPolicy, StorageType } from "@nats-io/jetstream"
import { nanos } from "@nats-io/nats-core"
import { Cause, Effect, Exit, Redacted, SubscriptionRef } from "effect"
import assert from "node:assert/strict"
import { test } from "node:test"
import { admin, buildExit, bus, run, server, waitFor } from "./support/nats.ts"

test("nats config: the stream is created with the configured subjects, limits, dedupe window and storage", { timeout: 30_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    yield* bus({
      servers: nats.url,
      stream: {
        name: "PROV_EVENTS",
        subjects: ["cqc.events.v1.>", "cqc.audit.v1.>"],
        maxAge: "1 hour",
        maxMessages: 50_000,
        maxBytes: 64 * 1024 * 1024,
        duplicateWindow: "30 seconds",
        storage: "memory",
        retention: "limits"
      },
      deadLetters: { stream: "PROV_DLQ", subjectPrefix: "prov.dlq", maxAge: "7 days" }
    })
    const { jsm } = yield* admin(nats.url)
    const info = yield* Effect.promise(() => jsm.streams.info("PROV_EVENTS"))
    assert.deepEqual([...info.config.subjects].sort(), ["cqc.audit.v1.>", "cqc.events.v1.>"])
    assert.equal(info.config.max_age, nanos(60 * 60 * 1000))
    assert.equal(info.config.max_msgs, 50_000)
    assert.equal(info.config.max_bytes, 64 * 1024 * 1024)
    assert.equal(info.config.duplicate_window, nanos(30_000))
    assert.equal(info.config.storage, StorageType.Memory)
    assert.equal(info.config.retention, RetentionPolicy.Limits)
    const dlq = yield* Effect.promise(() => jsm.streams.info("PROV_DLQ"))
    assert.deepEqual(dlq.config.subjects, ["prov.dlq.>"])
    assert.equal(dlq.config.max_age, nanos(7 * 24 * 60 * 60 * 1000))
    const names = yield* Effect.promise(() => jsm.streams.names().next())
    assert.deepEqual([...names].sort(), ["CQBUS_HEALTH", "PROV_DLQ", "PROV_EVENTS"], "no other stream (no default CQC_EVENTS)")
  })))

test("nats config: createOrUpdate (the default) brings an existing stream to the options", { timeout: 30_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { jsm } = yield* admin(nats.url)
    yield* Effect.promise(() => jsm.streams.add({ name: "CQC_EVENTS", subjects: ["cqc.events.v1.>"], max_msgs: 100 }))
    yield* bus({ servers: nats.url, stream: { maxMessages: 5_000, maxAge: "2 hours" } })
    const info = yield* Effect.promise(() => jsm.streams.info("CQC_EVENTS"))
    assert.equal(info.config.max_msgs, 5_000)
    assert.equal(info.config.max_age, nanos(2 * 60 * 60 * 1000))
  })))

test("nats config: validateOnly fails at layer build listing exactly the differing fields, and changes nothing", { timeout: 30_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { jsm } = yield* admin(nats.url)
    yield* Effect.promise(() =>
      jsm.streams.add({
        name: "CQC_EVENTS",
        subjects: ["cqc.events.v1.>"],
        max_msgs: 100,
        max_age: nanos(60_000),
        duplicate_window: nanos(60_000)
      })
    )
    yield* Effect.promise(() => jsm.streams.add({ name: "CQC_DLQ", subjects: ["cqbus.dlq.>"] }))
    const exit = yield* buildExit({
      servers: nats.url,
      provisioning: "validateOnly",
      // max_msgs and max_age differ; duplicate_window and subjects match
      stream: { maxMessages: 5_000, maxAge: "1 hour", duplicateWindow: "1 minute" }
    })
    const error = failureOf(exit)
    assert.ok(error instanceof Error)
    console.log(`validateOnly: ${error.message}`)
    assert.match(error.message, /CQC_EVENTS/)
    assert.match(error.message, /validateOnly/)
    assert.match(error.message, /max_msgs: 100 → 5000/)
    assert.match(error.message, new RegExp(`max_age: ${nanos(60_000)} → ${nanos(60 * 60 * 1000)}`))
    assert.doesNotMatch(error.message, /duplicate_window|subjects/, "fields that match are not listed")
    const info = yield* Effect.promise(() => jsm.streams.info("CQC_EVENTS"))
    assert.equal(info.config.max_msgs, 100, "the stream is unchanged")
    assert.equal(info.config.max_age, nanos(60_000))

    const missing = failureOf(yield* buildExit({ servers: nats.url, provisioning: "validateOnly", stream: { name: "NOPE" } }))
    assert.ok(missing instanceof Error)
    assert.match(missing.message, /stream NOPE does not exist/)
    const names = yield* Effect.promise(() => jsm.streams.names().next())
    assert.ok(!names.includes("NOPE"), "validateOnly created nothing")

    // And it passes when the stream matches.
    const ok = yield* buildExit({ servers: nats.url, provisioning: "validateOnly", stream: { maxMessages: 100 } })
    assert.ok(Exit.isSuccess(ok), Exit.isFailure(ok) ? Cause.pretty(ok.cause) : "")
  })))

test("nats config: createOnly creates a missing stream but leaves an existing one alone", { timeout: 30_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { jsm } = yield* admin(nats.url)
    yield* Effect.promise(() => jsm.streams.add({ name: "CQC_EVENTS", subjects: ["cqc.events.v1.>"], max_msgs: 100 }))
    const { bus: b } = yield* bus({ servers: nats.url, provisioning: "createOnly", stream: { maxMessages: 5_000, maxAge: "1 hour" } })
    const info = yield* Effect.promise(() => jsm.streams.info("CQC_EVENTS"))
    assert.equal(info.config.max_msgs, 100, "the existing stream keeps its max_msgs")
    assert.equal(info.config.max_age, 0, "and its max_age")
    const dlq = yield* Effect.promise(() => jsm.streams.info("CQC_DLQ"))
    assert.deepEqual(dlq.config.subjects, ["cqbus.dlq.>"], "the missing dead-letter stream was created")
    const ack = yield* b.publish(AssetCreatedEvent, { assetId: "c1" })
    assert.equal(ack.stream, "CQC_EVENTS")
  })))

test("nats config: skip makes no JetStream management call; the first publish then fails NoStream", { timeout: 30_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { jsm, nc } = yield* admin(nats.url)
    // Every JetStream API request on the server passes through $JS.API.>; a plain subscriber sees a copy of each.
    const requests: Array<string> = []
    nc.subscribe("$JS.API.>", { callback: (_error, msg) => void requests.push(msg.subject) })
    yield* Effect.promise(() => nc.flush())

    const { bus: b } = yield* bus({ servers: nats.url, provisioning: "skip" })
    yield* Effect.promise(() => nc.flush())
    yield* Effect.sleep("200 millis")
    console.log(`skip: JetStream API requests at layer build: ${JSON.stringify(requests)}`)
    assert.deepEqual(requests, [], "no JetStream API request at layer build")
    const names = yield* Effect.promise(() => jsm.streams.names().next())
    assert.deepEqual(names, [], "no stream was created")

    const error = yield* Effect.flip(b.publish(AssetCreatedEvent, { assetId: "s1" }))
    assert.ok(error instanceof PublishError)
    assert.equal(error.reason, "NoStream", error.message)
    assert.equal(error.retriable, false)

    // Once operators create the stream, the same bus works.
    yield* Effect.promise(() => jsm.streams.add({ name: "CQC_EVENTS", subjects: ["cqc.events.v1.>"] }))
    const handled: Array<string> = []
    yield* b.subscribe(AssetCreatedEvent, (event) => Effect.sync(() => void handled.push(event.assetId)), { group: "after-skip" })
    yield* b.publish(AssetCreatedEvent, { assetId: "s2" })
    yield* waitFor(() => handled.includes("s2"), "the event is delivered once the stream exists")
  })))

test("nats config: a rejected password never appears in the layer build error", { timeout: 30_000 }, () =>
  run(Effect.gen(function*() {
    const password = "Sup3r-S3cret-Pa55word"
    const wrong = "Wr0ng-S3cret-Pa55word"
    const nats = yield* server({ user: "alice", password })
    const host = nats.url.replace("nats://", "")

    const attempts = [
      { label: "password option", config: { servers: nats.url, user: "alice", password: Redacted.make(wrong) } },
      { label: "credentials in the URL", config: { servers: `nats://alice:${wrong}@${host}` } }
    ] as const
    for (const { config, label } of attempts) {
      const exit = yield* buildExit(config)
      const error = failureOf(exit)
      assert.ok(error instanceof Error)
      console.log(`credentials (${label}): ${error.message}`)
      assert.match(error.message, /cannot connect to NATS/i, `${label}: the error says what failed`)
      assert.match(error.message, /authori[sz]ation/i, `${label}: and why`)
      // Everything a log line could show: the message, the cause chain, and the pretty-printed Cause.
      const texts = [error.message, String(error), Cause.pretty(Exit.isFailure(exit) ? exit.cause : Cause.empty)]
      for (let cause: unknown = error.cause, i = 0; cause !== undefined && i < 5; i++) {
        texts.push(String(cause), cause instanceof Error ? cause.message : "", JSON.stringify(cause) ?? "")
        cause = cause instanceof Error ? cause.cause : undefined
      }
      for (const text of texts) {
        assert.ok(!text.includes(wrong), `${label}: the password leaked into ${JSON.stringify(text.slice(0, 300))}`)
        assert.ok(!text.includes(password), `${label}: the server's password leaked`)
      }
    }

    // The right password works, so the failures above were about the password; and the connection state that
    // plugins and health output read does not show it either.
    const { bus: b } = yield* bus({ servers: nats.url, user: "alice", password: Redacted.make(password) })
    yield* b.check
    const { bus: viaUrl, nats: transport } = yield* bus({ servers: `nats://alice:${password}@${host}` })
    yield* viaUrl.check
    const state = yield* SubscriptionRef.get(transport.state)
    assert.equal(state.status, "connected")
    assert.ok(!JSON.stringify(state).includes(password), `the connection state shows the password: ${JSON.stringify(state)}`)
  })))
