// Fetch batches against a real nats-server, beyond the conformance cases: a batch handler running past ackWait is kept
// alive (+WPI) so no other fetch of the group gets its messages meanwhile, the group is the very durable consumer a
// subscription of that group uses, and an ephemeral topic cannot be fetched. Each test owns its server.
import { defineEvent, Fetch, SubscribeError, Transport } from "@cqbus/core"
import { failureOf } from "@cqbus/testkit"
import { AssetCreatedEvent, AssetCreatedSchema } from "@cqbus/testkit/events"
import { jetstreamManager } from "@nats-io/jetstream"
import { Effect, Fiber } from "effect"
import assert from "node:assert/strict"
import { test } from "node:test"
import { bus, inScope, run, server, waitFor } from "./support/nats.ts"

test("nats fetch: a batch handler running past ackWait keeps its batch; another fetch of the group gets none of it", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { bus: b, nats: shape, transport } = yield* bus({ servers: nats.url, source: "fetch" })
    yield* b.publishAll(AssetCreatedEvent, Array.from({ length: 5 }, (_, i) => ({ assetId: `k${i}` })))
    const options = { group: "slow", max: 5, expires: "1 second", ackWait: "1 second" } as const
    let started = false
    const slow = yield* Effect.forkChild(
      Fetch.batch(AssetCreatedEvent, (batch) =>
        Effect.gen(function*() {
          started = true
          // Three times the ack wait: without keep-alives the server would redeliver the batch twice meanwhile.
          yield* Effect.sleep("3 seconds")
          return batch.map(() => Fetch.ack)
        }), options).pipe(Effect.provideService(Transport.Transport, transport))
    )
    yield* waitFor(() => started, "the slow batch handler runs")
    const other = yield* Fetch.batch(AssetCreatedEvent, (batch) => Effect.succeed(batch.map(() => Fetch.ack)), {
      ...options,
      expires: "2500 millis"
    }).pipe(Effect.provideService(Transport.Transport, transport))
    assert.equal(other.fetched, 0, "nothing of the running batch is redelivered to another fetch")
    const result = yield* Fiber.join(slow)
    assert.deepEqual(result, { fetched: 5, acked: 5, retried: 0, deadLettered: 0 })
    const jsm = yield* Effect.promise(() => jetstreamManager(shape.connection))
    const info = yield* Effect.promise(() => jsm.consumers.info(shape.stream, "slow"))
    assert.equal(info.num_redelivered, 0, "no message was redelivered")
    assert.equal(info.num_ack_pending, 0, "every message is acknowledged")
    assert.equal(info.num_pending, 0)
  })))

test("nats fetch: the group is the durable consumer a subscription of the group uses; fetching continues after it", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { bus: b, transport } = yield* bus({ servers: nats.url, source: "fetch" })
    const handled: Array<string> = []
    const subscription = yield* inScope(
      b.subscribe(AssetCreatedEvent, (event) => Effect.sync(() => handled.push(event.assetId)), { group: "shared" })
    )
    yield* b.publishAll(AssetCreatedEvent, Array.from({ length: 5 }, (_, i) => ({ assetId: `s${i}` })))
    yield* waitFor(() => handled.length === 5, "the subscription handles the first 5 events")
    yield* subscription.close
    yield* b.publishAll(AssetCreatedEvent, Array.from({ length: 3 }, (_, i) => ({ assetId: `s${5 + i}` })))
    const fetchedIds: Array<string> = []
    const result = yield* Fetch.each(AssetCreatedEvent, (event) => Effect.sync(() => fetchedIds.push(event.assetId)), {
      group: "shared",
      max: 10,
      expires: "1 second"
    }).pipe(Effect.provideService(Transport.Transport, transport))
    assert.equal(result.fetched, 3)
    assert.deepEqual(fetchedIds, ["s5", "s6", "s7"], "only what the group has not acknowledged")
  })))

/** A topic outside the bus's stream (`cqc.events.v1.>`), so it may be ephemeral. */
const Live = defineEvent(AssetCreatedSchema, { topic: "cqc.live.v1.asset_created" })

test("nats fetch: an ephemeral topic cannot be fetched (nothing is stored)", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { transport } = yield* bus({
      servers: nats.url,
      source: "fetch",
      topics: { [Live.topic]: "ephemeral" }
    })
    const exit = yield* Effect.exit(
      Fetch.each(Live, () => Effect.void, { group: "none", expires: "100 millis" }).pipe(
        Effect.provideService(Transport.Transport, transport)
      )
    )
    const error = failureOf(exit)
    assert.ok(error instanceof SubscribeError)
    assert.equal(error.reason, "Unsupported")
    assert.match(error.message, /is ephemeral, so nothing is stored to fetch/)
  })))
