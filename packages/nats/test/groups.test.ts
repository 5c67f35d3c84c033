// A durable group that already exists on the server (from an older deploy, a Go service or an ops script) runs with
// the settings the subscription asks for, per provisioning strategy: createOrUpdate updates what nats-server lets an
// update change, validateOnly and createOnly refuse naming each differing field, skip keeps the server's settings and
// follows them (keep-alives from its ack_wait, dead letters at its max_deliver), and a start position the server cannot
// change is refused under every strategy. And the reproduction of issue 10 item 1: a group first subscribed with
// ackWait 2 s, then with the default and a handler longer than 2 s, handles its event once, one run at a time.
// Each test owns its server.
import { Backoff, SubscribeError } from "@cqbus/core"
import type { NatsEventBusConfig } from "@cqbus/nats"
import { AssetCreatedEvent } from "@cqbus/testkit/events"
import { AckPolicy, type ConsumerConfig, DeliverPolicy, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream"
import { nanos, type NatsConnection } from "@nats-io/nats-core"
import { connect } from "@nats-io/transport-node"
import { Effect } from "effect"
import assert from "node:assert/strict"
import { test } from "node:test"
import { bus, inScope, run, server, waitFor } from "./support/nats.ts"

const topic = AssetCreatedEvent.topic

/** A plain nats.js JetStream manager ("someone else": a Go service, an ops script), closed with the test's scope. */
const admin = (url: string) =>
  Effect.gen(function*() {
    const nc = yield* Effect.acquireRelease(
      Effect.promise(() => connect({ servers: url })),
      (nc: NatsConnection) => Effect.promise(() => nc.close())
    )
    const jsm: JetStreamManager = yield* Effect.promise(() => jetstreamManager(nc))
    return jsm
  })

/** Creates a group's consumer directly, as another program would. */
const foreignGroup = (jsm: JetStreamManager, name: string, config: Partial<ConsumerConfig>) =>
  Effect.promise(() =>
    jsm.consumers.add("CQC_EVENTS", {
      durable_name: name,
      ack_policy: AckPolicy.Explicit,
      filter_subject: topic,
      deliver_policy: DeliverPolicy.All,
      ...config
    })
  )

/** A server whose streams a bus has provisioned (and closed again), and an admin client for it. */
const provisioned = Effect.gen(function*() {
  const nats = yield* server()
  const jsm = yield* admin(nats.url)
  const streams = yield* inScope(bus({ servers: nats.url, source: "groups" }))
  yield* streams.close
  return { jsm, nats }
})

const infoOf = (jsm: JetStreamManager, name: string) =>
  Effect.map(Effect.promise(() => jsm.consumers.info("CQC_EVENTS", name)), (info) => info.config)

// The reproduction is ackWait 2 s; with 1 s the old group's ack_wait also beats the keep-alives (sent at most
// a second apart) when the group keeps it, so the second case shows the double run itself without the fix.
for (const old of ["2 seconds", "1 second"] as const) {
  test(`nats groups: a group first run with ackWait ${old}, then with the default and a 5 s handler, handles its event once, one run at a time`, { timeout: 60_000 }, () =>
    run(Effect.gen(function*() {
      const nats = yield* server()
      const config: NatsEventBusConfig = { servers: nats.url, source: "groups" }
      const first = yield* inScope(Effect.gen(function*() {
        const { bus: b } = yield* bus(config)
        yield* b.subscribe(AssetCreatedEvent, () => Effect.void, { group: "G", ackWait: old })
      }))
      yield* first.close

      const { bus: b } = yield* bus(config)
      let running = 0
      let most = 0
      const runs: Array<number> = []
      const started = Date.now()
      yield* b.subscribe(AssetCreatedEvent, () =>
        Effect.gen(function*() {
          runs.push(Date.now() - started)
          most = Math.max(most, ++running)
          yield* Effect.sleep("5 seconds")
          running--
        }), { group: "G" })
      yield* b.publish(AssetCreatedEvent, { assetId: "once" })
      yield* waitFor(() => runs.length >= 1 && running === 0, "the handler ran to the end", 30_000)
      // Past the old ack_wait once more: a redelivery would have started by now.
      yield* Effect.sleep("2500 millis")
      console.log(`runs started at (ms): ${JSON.stringify(runs)}, most at once: ${most}`)
      assert.equal(most, 1, "never two runs at once")
      assert.equal(runs.length, 1, "one run in all")
      const jsm = yield* admin(nats.url)
      assert.equal((yield* infoOf(jsm, "G")).ack_wait, nanos(30_000), "the group now has the subscription's ack_wait")
    })))
}

test("nats groups: createOrUpdate brings a group someone else created to the subscription's settings; maxDeliver 7 is in force", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { bus: b, transport } = yield* bus({ servers: nats.url, source: "groups" })
    const jsm = yield* admin(nats.url)
    yield* foreignGroup(jsm, "ops", {
      ack_wait: nanos(2_000),
      max_deliver: 3,
      backoff: [nanos(1_000), nanos(2_000)],
      max_ack_pending: 10
    })
    const attempts: Array<number> = []
    yield* b.subscribe(AssetCreatedEvent, (_event, delivery) =>
      Effect.andThen(Effect.sync(() => void attempts.push(delivery.attempt)), Effect.fail("always")), {
      group: "ops",
      maxDeliver: 7,
      backoff: Backoff.constant("50 millis")
    })
    const config = yield* infoOf(jsm, "ops")
    console.log(`updated: ${JSON.stringify(config)}`)
    assert.equal(config.ack_wait, nanos(30_000))
    assert.equal(config.max_deliver, -1, "the bus counts deliveries itself and dead-letters after maxDeliver")
    assert.deepEqual(config.backoff ?? [], [])
    assert.equal(config.max_ack_pending, 1000)

    yield* b.publish(AssetCreatedEvent, { assetId: "seven" })
    let dead: ReadonlyArray<number> = []
    yield* waitFor(() => dead.length > 0, "the event is dead-lettered", 30_000, () => JSON.stringify(attempts))
      .pipe(Effect.raceFirst(Effect.forever(Effect.andThen(
        Effect.sleep("200 millis"),
        Effect.map(transport.deadLetters!, (letters) => void (dead = letters.map((l) => l.deliveryCount)))
      ))))
    assert.deepEqual(attempts, [1, 2, 3, 4, 5, 6, 7], "seven deliveries, then the dead letter")
    assert.deepEqual(dead, [7])
  })))

for (const strategy of ["validateOnly", "createOnly"] as const) {
  test(`nats groups: ${strategy} refuses a group whose settings differ, naming each field, and changes nothing`, { timeout: 60_000 }, () =>
    run(Effect.gen(function*() {
      const nats = yield* server()
      const jsm = yield* admin(nats.url)
      // Streams and a cqbus group created earlier with ackWait 2 s; a group created by someone else with max_deliver 5.
      const earlier = yield* inScope(Effect.gen(function*() {
        const { bus: b } = yield* bus({ servers: nats.url, source: "groups" })
        yield* b.subscribe(AssetCreatedEvent, () => Effect.void, { group: "earlier", ackWait: "2 seconds" })
      }))
      yield* earlier.close
      yield* foreignGroup(jsm, "ops", { ack_wait: nanos(2_000), max_deliver: 5 })

      const { bus: b } = yield* bus({ servers: nats.url, source: "groups", provisioning: strategy })
      const refused = yield* Effect.flip(b.subscribe(AssetCreatedEvent, () => Effect.void, { group: "ops", maxDeliver: 7 }))
      console.log(`${strategy}: ${refused.message}`)
      assert.ok(refused instanceof SubscribeError)
      assert.equal(refused.reason, "GroupConflict")
      assert.match(refused.message, /group ops/)
      assert.match(refused.message, new RegExp(strategy))
      assert.match(refused.message, /ack_wait: 2s → 30s/)
      assert.match(refused.message, /max_deliver: 5 → -1/)
      const again = yield* Effect.flip(b.subscribe(AssetCreatedEvent, () => Effect.void, { group: "earlier" }))
      assert.ok(again instanceof SubscribeError)
      assert.match(again.message, /ack_wait: 2s → 30s/)
      assert.doesNotMatch(again.message, /max_deliver/, "only the fields that differ")

      const ops = yield* infoOf(jsm, "ops")
      assert.equal(ops.ack_wait, nanos(2_000), "nothing was changed")
      assert.equal(ops.max_deliver, 5)
      assert.equal((yield* infoOf(jsm, "earlier")).ack_wait, nanos(2_000))
      // Asking for the group's own settings is fine.
      yield* b.subscribe(AssetCreatedEvent, () => Effect.void, { group: "earlier", ackWait: "2 seconds" })
    })))
}

test("nats groups: skip leaves a group as it is and follows its settings: keep-alives from its ack_wait, dead letters at its max_deliver", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const { jsm, nats } = yield* provisioned
    yield* foreignGroup(jsm, "legacy", { ack_wait: nanos(1_000), max_deliver: 2 })

    const { bus: b, transport } = yield* bus({ servers: nats.url, source: "groups", provisioning: "skip" })
    let running = 0
    let most = 0
    const runs: Array<string> = []
    yield* b.subscribe(AssetCreatedEvent, (event) =>
      Effect.gen(function*() {
        runs.push(event.assetId)
        if (event.assetId === "bad") return yield* Effect.fail("always")
        most = Math.max(most, ++running)
        // Longer than the group's ack_wait (1 s), far shorter than the subscription's (30 s).
        yield* Effect.sleep("2500 millis")
        running--
      }), { group: "legacy", backoff: Backoff.constant("50 millis") })
    const config = yield* infoOf(jsm, "legacy")
    assert.equal(config.ack_wait, nanos(1_000), "skip changes nothing")
    assert.equal(config.max_deliver, 2)

    yield* b.publish(AssetCreatedEvent, { assetId: "slow" })
    yield* b.publish(AssetCreatedEvent, { assetId: "bad" })
    let dead: ReadonlyArray<[string, number]> = []
    yield* waitFor(() => dead.length > 0 && running === 0, "the bad event is dead-lettered and the slow one done", 30_000, () =>
      JSON.stringify(runs))
      .pipe(Effect.raceFirst(Effect.forever(Effect.andThen(
        Effect.sleep("200 millis"),
        Effect.map(transport.deadLetters!, (letters) => void (dead = letters.map((l) => [l.errorTag, l.deliveryCount])))
      ))))
    yield* Effect.sleep("1500 millis")
    console.log(`skip: runs ${JSON.stringify(runs)}, most at once ${most}, dead ${JSON.stringify(dead)}`)
    assert.equal(runs.filter((id) => id === "slow").length, 1, "the slow event ran once")
    assert.equal(most, 1)
    assert.deepEqual(dead, [["MaxDeliverExceeded", 2]], "dead-lettered at the server's max_deliver, not lost")
  })))

test("nats groups: a start position the server cannot update is refused under every strategy, saying what to do", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const { jsm, nats } = yield* provisioned
    yield* foreignGroup(jsm, "fresh", { deliver_policy: DeliverPolicy.New, ack_wait: nanos(30_000), max_deliver: -1 })
    for (const provisioning of ["createOrUpdate", "validateOnly", "createOnly", "skip"] as const) {
      const { bus: b } = yield* bus({ servers: nats.url, source: "groups", provisioning })
      const refused = yield* Effect.flip(b.subscribe(AssetCreatedEvent, () => Effect.void, { group: "fresh" }))
      assert.ok(refused instanceof SubscribeError, provisioning)
      assert.equal(refused.reason, "GroupConflict")
      assert.match(refused.message, /deliver_policy: "new" → "all"/, provisioning)
      assert.match(refused.message, /delete the consumer|another group name/, provisioning)
      // With the group's own start position it runs.
      yield* b.subscribe(AssetCreatedEvent, () => Effect.void, { group: "fresh", deliverPolicy: "new" })
    }
    console.log("deliver policy refused under every strategy")
    assert.equal((yield* infoOf(jsm, "fresh")).deliver_policy, DeliverPolicy.New)
  })))
