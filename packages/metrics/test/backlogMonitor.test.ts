// BacklogMonitor over the memory transport, on virtual time: a slow handler moves its consumer to warning (age of its
// oldest unacknowledged delivery), a pile-up to critical (pending), and finishing the work brings it back to normal,
// each change on the stream in order with the recovery marked; a consumer that goes away while raised recovers; the
// thresholds are validated with ConfigErrors naming the option. Also the transport capabilities it reads
// (`oldestUnackedAge`, `publishing`) and the publisher gauges of `consumerLag`.
import assert from "node:assert/strict"
import { test } from "node:test"
import { Backlog, type BacklogChange, ConfigError, EventBus, Transport } from "@cqbus/core"
import { type TransportShape } from "@cqbus/core/backend"
import { BacklogMonitor, consumerLag, prometheus } from "@cqbus/metrics"
import { letTimePass, runScoped } from "@cqbus/testkit"
import { AssetCreatedEvent } from "@cqbus/testkit/events"
import { Deferred, Duration, Effect, Exit, Fiber, Layer, Scope, Stream } from "effect"

const monitored = (options: BacklogMonitor.BacklogMonitorOptions) =>
  BacklogMonitor.layer(options).pipe(Layer.provideMerge(EventBus.layerMemory()))

const OPTIONS: BacklogMonitor.BacklogMonitorOptions = {
  interval: "1 second",
  warning: { pending: 3, age: "10 seconds" },
  critical: { pending: 6, age: "1 minute" }
}

/** Collects the first `n` changes, subscribed before anything happens. */
const collect = (n: number) =>
  Effect.gen(function*() {
    const fiber = yield* Effect.forkChild(Stream.runCollect(Stream.take(BacklogMonitor.changes, n)))
    yield* letTimePass(10)
    return Fiber.join(fiber) as Effect.Effect<ReadonlyArray<BacklogChange>>
  })

const levelOf = (consumer: string) =>
  Effect.map(BacklogMonitor.states, (states) => states.find((s) => s.consumer === consumer)?.level)

test("backlog monitor: a slow handler goes normal -> warning (age) -> critical (pending) -> normal, with the recovery notice last", () =>
  runScoped(monitored(OPTIONS), Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const gate = yield* Deferred.make<void>()
    const changes = yield* collect(3)
    yield* bus.subscribe(AssetCreatedEvent, () => Deferred.await(gate), { group: "slow", concurrency: 1, drainTimeout: 0 })
    yield* bus.publish(AssetCreatedEvent, { assetId: "first" })
    yield* letTimePass(2_000)
    assert.equal(yield* levelOf("slow"), "normal", "a handler running for 2 s is below the 10 s warning age")

    yield* letTimePass(9_000)
    assert.equal(yield* levelOf("slow"), "warning", "its only delivery has been running for 10 s")
    const [state] = yield* BacklogMonitor.states
    assert.ok(state !== undefined && Duration.toMillis(state.lag.oldestUnackedAge!) >= 10_000, JSON.stringify(state))

    for (let i = 0; i < 6; i++) yield* bus.publish(AssetCreatedEvent, { assetId: `more-${i}` })
    yield* letTimePass(1_100)
    assert.equal(yield* levelOf("slow"), "critical", "six messages wait behind the slow one")

    yield* Deferred.succeed(gate, undefined)
    yield* letTimePass(1_100)
    assert.equal(yield* levelOf("slow"), "normal")
    const seen = yield* changes
    assert.deepEqual(seen.map((c) => [c.consumer, c.from, c.to, c.recovered]), [
      ["slow", "normal", "warning", false],
      ["slow", "warning", "critical", false],
      ["slow", "critical", "normal", true]
    ])
    assert.match(seen[0]!.reason, /oldest unacknowledged delivery 10s.* old \(warning at 10s\)/)
    assert.match(seen[1]!.reason, /^6 messages pending \(critical at 6\)$/)
    assert.match(seen[2]!.reason, /^back below every warning threshold: 0 messages pending, oldest unacknowledged delivery 0 old$/)
    assert.equal(seen[2]!.group, "slow")
    assert.equal(seen[2]!.topic, AssetCreatedEvent.topic)
    assert.ok(seen[0]!.at < seen[1]!.at && seen[1]!.at < seen[2]!.at, "in the order they happened")
  })))

test("backlog monitor: critical -> warning -> normal steps down one notice at a time; a consumer gone while raised recovers", () =>
  runScoped(monitored(OPTIONS), Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const changes = yield* collect(6)
    const gates = [yield* Deferred.make<void>(), yield* Deferred.make<void>()]
    let calls = 0
    yield* bus.subscribe(AssetCreatedEvent, () => Deferred.await(gates[Math.min(calls++, 1)]!), { group: "steps", concurrency: 1, drainTimeout: 0 })
    yield* letTimePass(100)
    yield* bus.publish(AssetCreatedEvent, { assetId: "held" })
    yield* letTimePass(61_000)
    assert.equal(yield* levelOf("steps"), "critical", "held for a minute")
    // The held one finishes; the next one starts and is held again: young, but four more wait (pending 4 >= 3).
    for (let i = 0; i < 5; i++) yield* bus.publish(AssetCreatedEvent, { assetId: `w${i}` })
    yield* Deferred.succeed(gates[0]!, undefined)
    yield* letTimePass(1_100)
    assert.equal(yield* levelOf("steps"), "warning")
    yield* Deferred.succeed(gates[1]!, undefined)
    yield* letTimePass(1_100)
    assert.equal(yield* levelOf("steps"), "normal")

    // A second consumer raised, then its subscription ends.
    const scope = yield* Scope.make()
    yield* bus.subscribe(AssetCreatedEvent, () => Effect.never, {
      group: "leaving",
      concurrency: 1,
      drainTimeout: 0,
      deliverPolicy: "new"
    })
      .pipe(Scope.provide(scope))
    yield* bus.publish(AssetCreatedEvent, { assetId: "stuck" })
    yield* letTimePass(11_000)
    assert.equal(yield* levelOf("leaving"), "warning")
    yield* Scope.close(scope, Exit.void)
    yield* letTimePass(1_100)
    assert.equal(yield* levelOf("leaving"), undefined, "no state for a consumer that is gone")

    const seen = yield* changes
    assert.deepEqual(seen.map((c) => [c.consumer, c.from, c.to, c.recovered]), [
      ["steps", "normal", "warning", false],
      ["steps", "warning", "critical", false],
      ["steps", "critical", "warning", true],
      ["steps", "warning", "normal", true],
      ["leaving", "normal", "warning", false],
      ["leaving", "warning", "normal", true]
    ])
    assert.match(seen[1]!.reason, /oldest unacknowledged delivery 1m.* old \(critical at 1m\)/)
    assert.match(seen[2]!.reason, /^4 messages pending \(warning at 3\)$/)
    assert.match(seen[5]!.reason, /gone/)
  })))

test("backlog monitor: thresholds are validated with ConfigErrors naming the option", async () => {
  const failure = async (options: unknown): Promise<ConfigError> => {
    const exit = await Effect.runPromise(Effect.exit(Effect.scoped(Layer.build(
      BacklogMonitor.layer(options as BacklogMonitor.BacklogMonitorOptions).pipe(Layer.provide(EventBus.layerMemory()))
    ))))
    assert.ok(Exit.isFailure(exit), `refused: ${JSON.stringify(options)}`)
    const error = exit.cause.reasons.find((r) => r._tag === "Fail")
    assert.ok(error !== undefined && error.error instanceof ConfigError, String(exit.cause))
    return error.error
  }
  const cases: ReadonlyArray<readonly [unknown, string, RegExp]> = [
    ["often", "BacklogMonitor", /BacklogMonitor must be an object/],
    [{ interval: "10 millis" }, "BacklogMonitor.interval", /from 100ms to 1d/],
    [{ warning: { pending: 0 } }, "BacklogMonitor.warning.pending", /integer from 1/],
    [{ warning: { pending: 2.5 } }, "BacklogMonitor.warning.pending", /integer/],
    [{ critical: { age: "5 secs" } }, "BacklogMonitor.critical.age", /must be a duration/],
    [{ warning: "high" }, "BacklogMonitor.warning", /must be an object/],
    [
      { warning: { pending: 10 }, critical: { pending: 5 } },
      "BacklogMonitor.critical.pending",
      /^BacklogMonitor.critical.pending must be at least BacklogMonitor.warning.pending: 5 < 10$/
    ],
    [
      { warning: { pending: 200_000 } },
      "BacklogMonitor.critical.pending",
      /critical.pending \(the default\) must be at least BacklogMonitor.warning.pending: 100000 < 200000/
    ],
    [{ warning: { age: "10 minutes" } }, "BacklogMonitor.critical.age", /critical.age \(the default\) must be at least/]
  ]
  for (const [options, option, message] of cases) {
    const error = await failure(options)
    assert.equal(error.option, option, JSON.stringify(options))
    assert.match(error.message, message)
  }
  // Equal thresholds are accepted: critical is reached first.
  await Effect.runPromise(Effect.scoped(Layer.build(
    BacklogMonitor.layer({ warning: { pending: 5, age: "1 minute" }, critical: { pending: 5, age: "1 minute" } }).pipe(
      Layer.provide(EventBus.layerMemory())
    )
  )))
})

test("backlog monitor: a transport without the consumers capability has no states; Backlog is the core service", () => {
  const bare = Layer.effect(Transport.Transport, Effect.map(Effect.service(Transport.Transport), (t): TransportShape => ({
    name: t.name,
    publish: t.publish,
    consume: t.consume,
    check: t.check
  }))).pipe(Layer.provide(EventBus.layerMemory()))
  return runScoped(BacklogMonitor.layer().pipe(Layer.provideMerge(bare)), Effect.gen(function*() {
    yield* letTimePass(30_000)
    const backlog = yield* Backlog.Backlog
    assert.deepEqual(yield* backlog.states, [])
  }))
})

test("memory transport: oldestUnackedAge follows the longest-running handler; publishing is always empty", () =>
  runScoped(EventBus.layerMemory(), Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const transport = yield* Transport.Transport
    const gates = [yield* Deferred.make<void>(), yield* Deferred.make<void>()]
    let calls = 0
    yield* bus.subscribe(AssetCreatedEvent, () => Deferred.await(gates[calls++]!), { group: "age", concurrency: 2, drainTimeout: 0 })
    const age = Effect.map(transport.consumers!, ([lag]) => Duration.toMillis(lag!.oldestUnackedAge!))
    assert.equal(yield* age, 0, "nothing runs")
    yield* bus.publish(AssetCreatedEvent, { assetId: "a" })
    yield* letTimePass(3_000)
    yield* bus.publish(AssetCreatedEvent, { assetId: "b" })
    yield* letTimePass(2_000)
    assert.equal(yield* age, 5_000, "the first one has run for 5 s")
    yield* Deferred.succeed(gates[0]!, undefined)
    yield* letTimePass(10)
    assert.equal(yield* age, 2_010, "now the second one is the oldest")
    yield* Deferred.succeed(gates[1]!, undefined)
    yield* letTimePass(10)
    assert.equal(yield* age, 0)
    assert.deepEqual(yield* transport.publishing!, { inFlight: 0, waiting: 0 })
  })))

test("consumerLag: the publisher's depth becomes two gauges where the transport reports it", async () => {
  const text = await Effect.runPromise(
    Effect.andThen(consumerLag({ attributes: { service: "depth" } }), prometheus()).pipe(
      Effect.provide(Layer.succeed(Transport.Transport, {
        name: "fake",
        publish: () => Effect.die("unused"),
        consume: () => Effect.die("unused"),
        check: Effect.void,
        publishing: Effect.succeed({ inFlight: 7, waiting: 2 })
      }))
    )
  )
  assert.match(text, /^messaging_publisher_in_flight_messages\{service="depth"\} 7$/m)
  assert.match(text, /^messaging_publisher_waiting_messages\{service="depth"\} 2$/m)
})
