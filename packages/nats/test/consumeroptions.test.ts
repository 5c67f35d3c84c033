// The consumer options of a subscription against a real nats-server: what each one sends to the server (read back with
// consumer info, or off the wire for the pull request's heartbeat), how an existing group with other settings for them
// is updated or refused, fire-and-forget reads with ackPolicy "none", and what nats-server 2.9 does with metadata.
// Deliver last / last per subject, maxAckPending and replay "original" are conformance cases (conformance.test.ts runs
// them here too). Each test owns its server.
import { Reject, RetryLater, SubscribeError } from "@cqbus/core"
import { captureLogs } from "@cqbus/testkit"
import { AssetCreatedEvent } from "@cqbus/testkit/events"
import { AckPolicy, DeliverPolicy, jetstreamManager, ReplayPolicy } from "@nats-io/jetstream"
import { nanos } from "@nats-io/nats-core"
import { connect } from "@nats-io/transport-node"
import { Duration, Effect } from "effect"
import assert from "node:assert/strict"
import { test } from "node:test"
import { bus, run, server, waitFor } from "./support/nats.ts"

test("nats consumer options: a group's settings reach the server as asked", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { bus: b, nats: transport } = yield* bus({ servers: nats.url, source: "options" })
    yield* b.subscribeRaw("cqc.events.v1.*", () => Effect.void, {
      group: "configured",
      deliverPolicy: "lastPerSubject",
      replay: "original",
      maxAckPending: 7,
      description: "the seeds' read of the latest prices"
    })
    yield* b.subscribe(AssetCreatedEvent, () => Effect.void, { group: "fire", ackPolicy: "none", deliverPolicy: "last" })
    const jsm = yield* Effect.promise(() => jetstreamManager(transport.connection))
    const configured = (yield* Effect.promise(() => jsm.consumers.info(transport.stream, "configured"))).config
    assert.equal(configured.deliver_policy, DeliverPolicy.LastPerSubject)
    assert.equal(configured.replay_policy, ReplayPolicy.Original)
    assert.equal(configured.max_ack_pending, 7)
    assert.equal(configured.ack_policy, AckPolicy.Explicit)
    assert.equal(configured.description, "the seeds' read of the latest prices")
    const fire = (yield* Effect.promise(() => jsm.consumers.info(transport.stream, "fire"))).config
    assert.equal(fire.ack_policy, AckPolicy.None)
    assert.equal(fire.deliver_policy, DeliverPolicy.Last)
    assert.equal(fire.replay_policy, ReplayPolicy.Instant)
  })))

test("nats consumer options: an ephemeral subscription's inactiveThreshold and idleHeartbeat", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { bus: b, nats: transport } = yield* bus({ servers: nats.url, source: "options" })
    // The pull requests on the wire, as a second connection sees them.
    const spy = yield* Effect.acquireRelease(
      Effect.promise(() => connect({ servers: nats.url })),
      (nc) => Effect.promise(() => nc.close())
    )
    const heartbeats: Array<number> = []
    spy.subscribe(`$JS.API.CONSUMER.MSG.NEXT.${transport.stream}.>`, {
      callback: (_, msg) => {
        heartbeats.push((msg.json() as { readonly idle_heartbeat: number }).idle_heartbeat)
      }
    })
    yield* Effect.promise(() => spy.flush())
    yield* b.subscribe(AssetCreatedEvent, () => Effect.void, { inactiveThreshold: "5 seconds", idleHeartbeat: "2 seconds" })
    const jsm = yield* Effect.promise(() => jetstreamManager(transport.connection))
    const consumers = yield* Effect.promise(() => jsm.consumers.list(transport.stream).next())
    assert.equal(consumers.length, 1)
    assert.equal(consumers[0]!.config.inactive_threshold, nanos(5_000))
    assert.equal(consumers[0]!.config.durable_name, undefined, "ephemeral")
    yield* waitFor(() => heartbeats.length > 0, "a pull request is seen")
    assert.ok(heartbeats.every((hb) => hb === nanos(2_000)), `every pull asks for a 2 s heartbeat: ${heartbeats.join(", ")}`)
  })))

test("nats consumer options: with ackPolicy none every event is delivered once, whatever the handler does", { timeout: 60_000 }, () => {
  const logs = captureLogs()
  return run(logs.provide(Effect.gen(function*() {
    const nats = yield* server()
    const { bus: b, nats: transport, transport: port } = yield* bus({ servers: nats.url, source: "options" })
    const seen: Array<string> = []
    yield* b.subscribe(AssetCreatedEvent, (event) =>
      Effect.suspend(() => {
        seen.push(event.assetId)
        if (event.assetId === "retry") return Effect.fail(new RetryLater({ delay: "100 millis", reason: "not yet" }))
        if (event.assetId === "reject") return Effect.fail(new Reject({ reason: "unwanted" }))
        if (event.assetId === "fail") return Effect.fail(new Error("broken"))
        return Effect.void
      }), { group: "fire", ackPolicy: "none", ackWait: "1 second", maxDeliver: 3 })
    for (const assetId of ["ok", "retry", "reject", "fail"]) yield* b.publish(AssetCreatedEvent, { assetId })
    yield* waitFor(() => seen.length === 4, "each event is delivered")
    // Past a redelivery delay, an ackWait and more: nothing comes again.
    yield* Effect.sleep(Duration.millis(2_000))
    assert.deepEqual([...seen].sort(), ["fail", "ok", "reject", "retry"], "each event once")
    assert.deepEqual(yield* port.deadLetters!, [], "nothing is dead-lettered")
    const jsm = yield* Effect.promise(() => jetstreamManager(transport.connection))
    const info = yield* Effect.promise(() => jsm.consumers.info(transport.stream, "fire"))
    assert.equal(info.num_ack_pending, 0)
    assert.equal(info.num_pending, 0)
    const dropped = logs.lines.filter((line) => line.message.includes(`ackPolicy "none"`))
    assert.equal(dropped.length, 3, `one line per outcome other than Ack: ${dropped.map((l) => l.message).join(" | ")}`)
    assert.ok(dropped.some((line) => /outcome DeadLetter: .*unwanted/.test(line.message)))
    assert.ok(dropped.some((line) => /outcome Nak: .*not yet/.test(line.message)))
  })))
})

test("nats consumer options: an existing group with other settings is updated or refused, naming the fields", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const first = yield* bus({ servers: nats.url, source: "options" })
    yield* first.bus.subscribe(AssetCreatedEvent, () => Effect.void, {
      group: "existing",
      maxAckPending: 50,
      description: "first"
    })
    const jsm = yield* Effect.promise(() => jetstreamManager(first.nats.connection))
    const configOf = Effect.promise(() => jsm.consumers.info(first.nats.stream, "existing")).pipe(Effect.map((i) => i.config))

    // validateOnly: the differing updatable fields are named, nothing changes.
    const strict = yield* bus({ servers: nats.url, source: "options", provisioning: "validateOnly" })
    const refused = yield* Effect.flip(strict.bus.subscribe(AssetCreatedEvent, () => Effect.void, {
      group: "existing",
      maxAckPending: 20,
      description: "second"
    }))
    assert.ok(refused instanceof SubscribeError)
    assert.equal(refused.reason, "GroupConflict")
    assert.match(refused.message, /max_ack_pending: 50 → 20/)
    assert.match(refused.message, /description: "first" → "second"/)
    assert.equal((yield* configOf).max_ack_pending, 50)

    // createOrUpdate (the default): a given maxAckPending is set as asked, lower too, and the description follows.
    yield* first.bus.subscribe(AssetCreatedEvent, () => Effect.void, { group: "existing", maxAckPending: 20, description: "second" })
    const updated = yield* configOf
    assert.equal(updated.max_ack_pending, 20)
    assert.equal(updated.description, "second")

    // What the server cannot change is refused under every strategy, named.
    for (const [options, field] of [
      [{ ackPolicy: "none" }, /ack_policy: "explicit" → "none"/],
      [{ replay: "original" }, /replay_policy: "instant" → "original"/]
    ] as const) {
      const fixed = yield* Effect.flip(first.bus.subscribe(AssetCreatedEvent, () => Effect.void, {
        group: "existing",
        maxAckPending: 20,
        description: "second",
        ...options
      }))
      assert.ok(fixed instanceof SubscribeError)
      assert.equal(fixed.reason, "GroupConflict")
      assert.match(fixed.message, field)
      assert.match(fixed.message, /cannot change/)
    }
  })))

test("nats consumer options: metadata on nats-server 2.9 is left out with a warning; the subscription runs", { timeout: 60_000 }, () => {
  const logs = captureLogs()
  return run(logs.provide(Effect.gen(function*() {
    const nats = yield* server()
    const { bus: b, nats: transport } = yield* bus({ servers: nats.url, source: "options" })
    const version = transport.connection.info?.version ?? ""
    const seen: Array<string> = []
    yield* b.subscribe(AssetCreatedEvent, (event) => Effect.sync(() => seen.push(event.assetId)), {
      group: "labelled",
      metadata: { team: "seeds" }
    })
    yield* b.publish(AssetCreatedEvent, { assetId: "m1" })
    yield* waitFor(() => seen.length === 1, "the subscription runs")
    const jsm = yield* Effect.promise(() => jetstreamManager(transport.connection))
    const config = (yield* Effect.promise(() => jsm.consumers.info(transport.stream, "labelled"))).config
    const warned = logs.lines.filter((line) => /does not keep consumer metadata/.test(line.message))
    if (/^2\.9\./.test(version)) {
      assert.equal(config.metadata, undefined, "2.9 keeps no metadata")
      assert.equal(warned.length, 1, "one warning says the metadata is left out")
      assert.match(warned[0]!.message, /group labelled/)
      assert.match(warned[0]!.message, new RegExp(version.replaceAll(".", "\\.")))
      // Subscribing again compares without metadata: no update loop, no refusal.
      yield* b.subscribe(AssetCreatedEvent, () => Effect.void, { group: "labelled", metadata: { team: "seeds" } })
    } else {
      assert.equal(config.metadata?.["team"], "seeds", `nats-server ${version} keeps metadata`)
      assert.equal(warned.length, 0)
    }
  })))
})
