// Backlog states over a real nats-server: a slow handler moves its consumer to warning (by the age of its oldest
// unacknowledged delivery, which the pull loop reports) and back to normal once it finishes, with the recovery notice;
// and the publisher's depth (PubAcks awaited, publishes waiting for a slot) through the `publishing` capability.
import assert from "node:assert/strict"
import { test } from "node:test"
import { type BacklogChange, type BacklogState, Transport } from "@cqbus/core"
import { BacklogMonitor } from "@cqbus/metrics"
import { AssetCreatedEvent } from "@cqbus/testkit/events"
import { Deferred, Duration, Effect, Fiber, Stream } from "effect"
import { bus, run, server, waitFor } from "../packages/nats/test/support/nats.ts"

test("backlog over NATS: a slow handler goes warning (oldest unacked age) and back to normal with a recovery notice", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { bus: b, transport } = yield* bus({ servers: nats.url, source: "backlog" })
    const backlog = yield* BacklogMonitor.make({
      interval: "100 millis",
      warning: { pending: 1_000, age: "600 millis" },
      critical: { pending: 10_000, age: "1 hour" }
    }).pipe(Effect.provideService(Transport.Transport, transport))
    const changes = yield* Effect.forkChild(Stream.runCollect(Stream.take(backlog.changes, 2)))
    let states: ReadonlyArray<BacklogState> = []
    yield* Effect.forkChild(Effect.forever(Effect.andThen(
      Effect.map(backlog.states, (all) => (states = all)),
      Effect.sleep("20 millis")
    )))
    const levelOf = () => states.find((s) => s.consumer === "backlog_slow")?.level

    const gate = yield* Deferred.make<void>()
    let started = 0
    yield* b.subscribe(AssetCreatedEvent, () => Effect.andThen(Effect.sync(() => started++), Deferred.await(gate)), {
      group: "backlog_slow",
      concurrency: 1
    })
    yield* b.publish(AssetCreatedEvent, { assetId: "slow-1" })
    yield* waitFor(() => started === 1, "the handler runs")
    yield* waitFor(() => levelOf() === "normal", "the consumer is listed, normal while young", 5_000, () => JSON.stringify(states))
    yield* waitFor(() => levelOf() === "warning", "warning once its delivery is 600 ms old", 10_000, () => JSON.stringify(states))
    const raised = states.find((s) => s.consumer === "backlog_slow")!
    assert.ok(Duration.toMillis(raised.lag.oldestUnackedAge!) >= 600, JSON.stringify(raised))
    assert.equal(raised.lag.ackPending, 1)

    yield* Deferred.succeed(gate, undefined)
    yield* waitFor(() => levelOf() === "normal", "normal once the handler finished", 10_000, () => JSON.stringify(states))
    const [lag] = yield* transport.consumers!
    assert.equal(Duration.toMillis(lag!.oldestUnackedAge!), 0, "no handler runs")

    const seen: ReadonlyArray<BacklogChange> = yield* Fiber.join(changes)
    assert.deepEqual(seen.map((c) => [c.consumer, c.from, c.to, c.recovered]), [
      ["backlog_slow", "normal", "warning", false],
      ["backlog_slow", "warning", "normal", true]
    ])
    assert.match(seen[0]!.reason, /^oldest unacknowledged delivery .* old \(warning at 600ms\)$/)
  })))

test("publishing over NATS: in flight never above maxPendingPublishes, the rest waits; both 0 once every PubAck came", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { bus: b, transport } = yield* bus({ servers: nats.url, source: "depth", maxPendingPublishes: 8 })
    assert.deepEqual(yield* transport.publishing!, { inFlight: 0, waiting: 0 })
    let maxInFlight = 0
    let maxWaiting = 0
    let done = false
    const sampler = yield* Effect.forkChild(Effect.gen(function*() {
      while (!done) {
        const depth = yield* transport.publishing!
        maxInFlight = Math.max(maxInFlight, depth.inFlight)
        maxWaiting = Math.max(maxWaiting, depth.waiting)
        yield* Effect.yieldNow
      }
    }))
    yield* Effect.forEach(Array.from({ length: 400 }, (_, i) => i), (i) =>
      b.publish(AssetCreatedEvent, { assetId: `d${i}` }), { concurrency: "unbounded", discard: true })
    done = true
    yield* Fiber.join(sampler)
    assert.ok(maxInFlight >= 1 && maxInFlight <= 8, `in flight: at most the window of 8, got ${maxInFlight}`)
    assert.ok(maxWaiting >= 1, `400 publishes at once: some waited for a slot, got ${maxWaiting}`)
    assert.deepEqual(yield* transport.publishing!, { inFlight: 0, waiting: 0 })
  })))
