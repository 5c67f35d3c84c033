// Connection metrics over a fake `connection` capability of the Transport port (no broker): the state gauge follows
// the events, the counters count disconnects, attempts and reconnects, the reader ends with `Closed`; a capability
// without events feeds the gauge from its state changes; a transport without a connection records nothing.
import { type ConnectionEvent, type ConnectionState, MemoryTransport, Transport } from "@cqbus/core"
import { connectionMetrics, layerConnectionMetrics, prometheus } from "@cqbus/metrics"
import { letTimePass } from "@cqbus/testkit"
import { Effect, Fiber, Layer, Metric, PubSub, type Scope, Stream, SubscriptionRef } from "effect"
import { TestClock } from "effect/testing"
import assert from "node:assert/strict"
import { test } from "node:test"

const STATE = "messaging_client_connection_state"
const DISCONNECTS = "messaging_client_connection_disconnects_total"
const ATTEMPTS = "messaging_client_connection_reconnect_attempts_total"
const RECONNECTS = "messaging_client_connection_reconnects_total"

/** Runs an effect under a TestClock with a fresh metric registry. */
const run = <A, E>(effect: Effect.Effect<A, E, Scope.Scope>): Promise<A> =>
  Effect.runPromise(
    Effect.scoped(effect).pipe(Effect.provideService(Metric.MetricRegistry, new Map()), Effect.provide(TestClock.layer()))
  )

/** The memory transport with a `connection` capability the test drives: a state ref and, optionally, events. */
const fakeConnection = (withEvents: boolean) =>
  Effect.gen(function*() {
    const state = yield* SubscriptionRef.make<ConnectionState>({
      status: "connected",
      reconnects: 0,
      lastError: undefined,
      server: "nats://broker:4222"
    })
    const events = yield* PubSub.unbounded<ConnectionEvent>()
    const memory = yield* Effect.service(Transport.Transport).pipe(Effect.provide(MemoryTransport.layer()))
    const layer = Layer.succeed(Transport.Transport, {
      ...memory,
      connection: {
        get: SubscriptionRef.get(state),
        changes: SubscriptionRef.changes(state),
        ...(withEvents
          ? { events: Stream.fromPubSub(events).pipe(Stream.takeUntil((e) => e._tag === "Closed")) }
          : {})
      }
    })
    const emit = (event: ConnectionEvent, status: ConnectionState["status"]) =>
      Effect.andThen(
        SubscriptionRef.update(state, (s) => ({ ...s, status })),
        PubSub.publish(events, event)
      ).pipe(Effect.andThen(letTimePass(20)))
    return { layer, emit }
  })

const gauges = (snapshots: ReadonlyArray<Metric.Metric.Snapshot>, extra: Record<string, string> = {}) =>
  Object.fromEntries(
    snapshots.filter((s) => s.id === STATE && Object.entries(extra).every(([k, v]) => s.attributes?.[k] === v)).map((s) => [
      s.attributes?.state,
      (s.state as Metric.GaugeState<number>).value
    ])
  )

const count = (snapshots: ReadonlyArray<Metric.Metric.Snapshot>, id: string) =>
  snapshots.filter((s) => s.id === id).reduce((sum, s) => sum + (s.type === "Counter" ? Number(s.state.count) : NaN), 0)

test("connectionMetrics: the state gauge follows the events, counters count disconnects, attempts and reconnects, Closed ends it", async () => {
  const { steps, done, text } = await run(Effect.gen(function*() {
    const fake = yield* fakeConnection(true)
    const fiber = yield* Effect.forkScoped(
      connectionMetrics({ attributes: { service: "search" } }).pipe(Effect.provide(fake.layer))
    )
    yield* letTimePass(20)
    const steps: Array<{ readonly state: Record<string, number>; readonly counts: ReadonlyArray<number> }> = []
    const snap = Effect.gen(function*() {
      const snapshots = yield* Metric.snapshot
      steps.push({
        state: gauges(snapshots, { service: "search" }),
        counts: [DISCONNECTS, ATTEMPTS, RECONNECTS].map((id) => count(snapshots, id))
      })
    })
    yield* snap
    yield* fake.emit({ _tag: "Disconnected", server: "nats://broker:4222" }, "disconnected")
    yield* snap
    yield* fake.emit({ _tag: "Reconnecting", attempt: 1 }, "reconnecting")
    yield* fake.emit({ _tag: "Reconnecting", attempt: 2 }, "reconnecting")
    yield* snap
    yield* fake.emit({ _tag: "Reconnected", server: "nats://broker:4222", attempts: 2 }, "connected")
    yield* snap
    const text = yield* prometheus()
    yield* fake.emit({ _tag: "Closed", reason: "closed" }, "closed")
    yield* snap
    const done = fiber.pollUnsafe() !== undefined
    return { steps, done, text }
  }))
  const only = (state: string) => ({ connected: 0, disconnected: 0, reconnecting: 0, closed: 0, [state]: 1 })
  assert.deepEqual(steps, [
    { state: only("connected"), counts: [0, 0, 0] },
    { state: only("disconnected"), counts: [1, 0, 0] },
    { state: only("reconnecting"), counts: [1, 2, 0] },
    { state: only("connected"), counts: [1, 2, 1] },
    { state: only("closed"), counts: [1, 2, 1] }
  ])
  assert.ok(done, "the reader returns once the connection is closed")
  assert.match(text, /messaging_client_connection_reconnects_total\{service="search"\} 1/)
  assert.match(text, /messaging_client_connection_state\{service="search",state="connected"\} 1/)
})

test("connectionMetrics: without events the gauge follows the state changes; without a connection nothing is recorded", async () => {
  const { state, counts, memory } = await run(Effect.gen(function*() {
    const fake = yield* fakeConnection(false)
    yield* Layer.build(layerConnectionMetrics().pipe(Layer.provide(fake.layer)))
    yield* letTimePass(20)
    yield* fake.emit({ _tag: "Disconnected", server: undefined }, "disconnected")
    const snapshots = yield* Metric.snapshot
    const state = gauges(snapshots)
    const counts = [DISCONNECTS, ATTEMPTS, RECONNECTS].map((id) => count(snapshots, id))
    // The memory transport has no connection: the effect returns at once and no series appears in a fresh registry.
    const memory = yield* Effect.gen(function*() {
      yield* Effect.timeout(connectionMetrics().pipe(Effect.provide(MemoryTransport.layer())), "1 second").pipe(
        Effect.forkChild,
        Effect.flatMap((fiber) => Effect.andThen(letTimePass(10), Fiber.join(fiber)))
      )
      return (yield* Metric.snapshot).filter((s) => s.id.startsWith("messaging_client_connection_")).length
    }).pipe(Effect.provideService(Metric.MetricRegistry, new Map()))
    return { state, counts, memory }
  }))
  assert.deepEqual(state, { connected: 0, disconnected: 1, reconnecting: 0, closed: 0 })
  assert.deepEqual(counts, [0, 0, 0], "no events, no counts")
  assert.equal(memory, 0)
})

test("connectionMetrics: options are checked", () => {
  assert.throws(() => connectionMetrics({ attributes: { service: "a\nb" } }), /connectionMetrics\.attributes/)
  assert.throws(() => layerConnectionMetrics({ attributes: 3 as never }), /layerConnectionMetrics\.attributes/)
})
