// The /health router through `app.request()` (no server): liveness without dependencies, readiness from the bus and
// the transport's capabilities, the heartbeat, user checks with their timeouts, the health+json shape and status
// codes, and redaction of secrets.
import assert from "node:assert/strict"
import { test } from "node:test"
import {
  Backlog,
  type BacklogLevel,
  type BacklogState,
  ConfigError,
  type ConnectionState,
  type ConsumerLag,
  EventBus,
  HealthError,
  MemoryTransport,
  Transport
} from "@cqbus/core"
import { type TransportShape } from "@cqbus/core/backend"
import { type HealthCheck, type HealthResponse, healthRouter, type HealthRouterOptions, Heartbeat } from "@cqbus/health"
import { AssetCreatedEvent } from "@cqbus/testkit/events"
import { Context, Deferred, Effect, Exit, Layer, ManagedRuntime, Redacted, Scope, Stream, SubscriptionRef } from "effect"
import { TestClock } from "effect/testing"
import { Hono } from "hono"

type Services = EventBus.EventBus | Transport.Transport | MemoryTransport.MemoryTransport

/** A memory bus runtime for one test, disposed when the test ends. */
const withRuntime = async <A, R = Services>(
  body: (runtime: ManagedRuntime.ManagedRuntime<R, unknown>) => Promise<A>,
  layer: Layer.Layer<R, unknown> = EventBus.layerMemory() as unknown as Layer.Layer<R>
): Promise<A> => {
  const runtime = ManagedRuntime.make(layer)
  try {
    return await body(runtime)
  } finally {
    await runtime.dispose()
  }
}

/** The router mounted as an application would mount it. */
const appOf = <R>(options: HealthRouterOptions<R>): Hono => new Hono().route("/health", healthRouter(options))

/** GETs a path and checks what every health response has in common. */
const get = async (app: Hono, path: string): Promise<{ status: number; body: HealthResponse; text: string }> => {
  const response = await app.request(path)
  assert.equal(response.headers.get("content-type"), "application/health+json")
  assert.equal(response.headers.get("cache-control"), "no-store")
  const text = await response.text()
  const body = JSON.parse(text) as HealthResponse
  assert.equal(response.status, body.status === "fail" ? 503 : 200, `the status code follows the status: ${text}`)
  for (const [key, list] of Object.entries(body.checks)) {
    for (const check of list) {
      assert.ok(["pass", "warn", "fail"].includes(check.status), `${key}: status ${check.status}`)
      assert.ok(!Number.isNaN(Date.parse(check.time)), `${key}: time ${check.time}`)
    }
  }
  return { status: response.status, body, text }
}

test("health /live answers pass without running anything on the runtime", async () => {
  let ran = 0
  const runtime = {
    runPromise: <A, E>(_effect: Effect.Effect<A, E, EventBus.EventBus | Transport.Transport>): Promise<A> => {
      ran++
      return Promise.reject(new Error("the broker is down"))
    }
  }
  const app = appOf({ runtime, service: { serviceId: "orders", version: "1" } })
  const live = await get(app, "/health/live")
  assert.equal(live.status, 200)
  assert.equal(live.body.status, "pass")
  assert.equal(live.body.serviceId, "orders")
  assert.equal(live.body.checks.uptime?.[0]?.observedUnit, "s")
  assert.equal(ran, 0, "liveness touched no dependency")
  // The same runtime makes readiness fail, with the reason and without an error page.
  const ready = await get(app, "/health/ready")
  assert.equal(ready.status, 503)
  assert.match(ready.body.output ?? "", /cannot run the checks: the broker is down/)
  assert.equal(ran, 1)
})

test("health /ready on a memory bus passes with the bus check timed and no draining; the full report is the same", () =>
  withRuntime(async (runtime) => {
    const app = appOf({ runtime, service: { serviceId: "orders", description: "order service" } })
    for (const path of ["/health/ready", "/health"]) {
      const { body, status } = await get(app, path)
      assert.equal(status, 200)
      assert.equal(body.status, "pass")
      assert.equal(body.serviceId, "orders")
      assert.equal(body.description, "order service")
      assert.deepEqual(Object.keys(body.checks).sort(), ["bus:draining", "bus:responseTime"],
        "no connection (memory has none), no consumers yet, no heartbeat without the service")
      const timed = body.checks["bus:responseTime"]![0]!
      assert.equal(timed.componentId, "memory")
      assert.equal(timed.observedUnit, "ms")
      assert.equal(typeof timed.observedValue, "number")
      assert.equal(body.checks["bus:draining"]![0]!.observedValue, false)
    }
  }))

test("health /ready reports each live consumer's backlog; warn at the warn threshold (200), fail at the fail one (503)", () =>
  withRuntime(async (runtime) => {
    await runtime.runPromise(Effect.gen(function*() {
      const bus = yield* EventBus.EventBus
      for (let i = 0; i < 5; i++) yield* bus.publish(AssetCreatedEvent, { assetId: `a${i}` })
      const running = yield* Deferred.make<void>()
      // Scoped to the runtime: it drains when the runtime is disposed.
      yield* bus.subscribe(AssetCreatedEvent, () => Effect.andThen(Deferred.succeed(running, undefined), Effect.never), {
        group: "stuck",
        concurrency: 1,
        drainTimeout: 0
      }).pipe(Scope.provide(yield* Effect.service(RuntimeScope)))
      // Until the first handler runs, all 5 are pending (a fixed sleep is too short on a loaded machine).
      yield* Deferred.await(running)
    }))
    const backlog = async (thresholds: { warn?: number; fail?: number }) =>
      get(appOf({ runtime, backlog: thresholds }), "/health/ready")

    const calm = await backlog({ warn: 5 })
    assert.equal(calm.body.status, "pass")
    assert.deepEqual(calm.body.checks["consumers:backlog"]!.map((c) => [c.componentId, c.observedValue, c.status]), [
      ["stuck", 4, "pass"]
    ], "4 pending: 5 published, 1 running")
    assert.equal(calm.body.checks["consumers:backlog"]![0]!.output, undefined, "no output on pass")

    const warned = await backlog({ warn: 4 })
    assert.equal(warned.status, 200)
    assert.equal(warned.body.status, "warn")
    assert.match(warned.body.checks["consumers:backlog"]![0]!.output!, /4 messages on cqc\.events\.v1\.asset_created/)

    const failed = await backlog({ warn: 2, fail: 4 })
    assert.equal(failed.status, 503)
    assert.equal(failed.body.checks["consumers:backlog"]![0]!.status, "fail")
  }, busWithScope()))

test("health /ready with backlog.states: the monitor's levels decide (warning warns, critical fails 503, normal passes)", async () => {
  const lag = (consumer: string, pending: number): ConsumerLag => ({
    topic: AssetCreatedEvent.topic,
    group: consumer,
    consumer,
    pending,
    ackPending: 1,
    redelivered: 0,
    draining: false
  })
  const stateOf = (consumer: string, level: BacklogLevel, pending: number): BacklogState => ({
    consumer,
    topic: AssetCreatedEvent.topic,
    group: consumer,
    level,
    reason: level === "normal" ? undefined : `${pending} messages pending (${level} at 5)`,
    since: new Date(0),
    lag: lag(consumer, pending)
  })
  let current: ReadonlyArray<BacklogState> = []
  const monitor = Layer.succeed(Backlog.Backlog, { states: Effect.sync(() => current), changes: Stream.empty })
  await withRuntime(async (runtime) => {
    const app = appOf({ runtime, backlog: { states: true } })
    current = [stateOf("billing", "normal", 0), stateOf("search", "normal", 2)]
    const calm = await get(app, "/health/ready")
    assert.equal(calm.status, 200)
    assert.deepEqual(calm.body.checks["consumers:backlog"]!.map((c) => [c.componentId, c.observedValue, c.status]), [
      ["billing", 0, "pass"],
      ["search", 2, "pass"]
    ])

    current = [stateOf("billing", "normal", 0), stateOf("search", "warning", 7)]
    const warned = await get(app, "/health/ready")
    assert.deepEqual([warned.status, warned.body.status], [200, "warn"])
    const search = warned.body.checks["consumers:backlog"]![1]!
    assert.equal(search.status, "warn")
    assert.match(search.output!, /^warning since 1970-01-01T00:00:00\.000Z: 7 messages pending \(warning at 5\)$/)

    current = [stateOf("billing", "critical", 50), stateOf("search", "warning", 7)]
    const failed = await get(app, "/health/ready")
    assert.deepEqual([failed.status, failed.body.status], [503, "fail"])
    assert.deepEqual(failed.body.checks["consumers:backlog"]!.map((c) => c.status), ["fail", "warn"])

    current = [stateOf("billing", "normal", 0), stateOf("search", "normal", 0)]
    assert.equal((await get(app, "/health/ready")).status, 200, "recovered")
  }, monitor.pipe(Layer.provideMerge(EventBus.layerMemory())) as unknown as Layer.Layer<Services>)

  // Without a monitor in the runtime the option was set for nothing: the check warns and says what to add.
  await withRuntime(async (runtime) => {
    const missing = await get(appOf({ runtime, backlog: { states: true } }), "/health/ready")
    assert.equal(missing.body.status, "warn")
    assert.match(missing.body.checks["consumers:backlog"]![0]!.output!, /no Backlog service.*BacklogMonitor\.layer/)
  })

  // The pending thresholds do not apply with states: a ConfigError rather than a silently ignored option.
  const runtime = ManagedRuntime.make(EventBus.layerMemory())
  try {
    assert.throws(() => healthRouter({ runtime, backlog: { states: true, warn: 10 } }), (error: unknown) =>
      error instanceof ConfigError && error.option === "healthRouter.backlog.warn" && /does not apply/.test(error.message))
    assert.throws(() => healthRouter({ runtime, backlog: { states: "yes" as unknown as boolean } }), (error: unknown) =>
      error instanceof ConfigError && error.option === "healthRouter.backlog.states")
  } finally {
    await runtime.dispose()
  }
})

test("health /ready fails (503) while a subscription drains and passes again once the drain is over", () =>
  withRuntime(async (runtime) => {
    const scope = await runtime.runPromise(Scope.make())
    await runtime.runPromise(Effect.gen(function*() {
      const bus = yield* EventBus.EventBus
      const running = yield* Deferred.make<void>()
      // A drain long enough for a loaded machine to see it; the test ends when it does.
      yield* bus.subscribe(AssetCreatedEvent, () => Effect.andThen(Deferred.succeed(running, undefined), Effect.never), {
        group: "slow",
        drainTimeout: "3 seconds"
      }).pipe(Scope.provide(scope))
      yield* bus.publish(AssetCreatedEvent, { assetId: "x" })
      yield* Deferred.await(running)
    }))
    const app = appOf({ runtime })
    assert.equal((await get(app, "/health/ready")).status, 200)
    let closed = false
    const closing = runtime.runPromise(Scope.close(scope, Exit.void)).then(() => void (closed = true))
    let draining = await get(app, "/health/ready")
    while (draining.status === 200 && !closed) {
      await new Promise((resolve) => setTimeout(resolve, 20))
      draining = await get(app, "/health/ready")
    }
    assert.equal(draining.status, 503)
    assert.deepEqual(draining.body.checks["bus:draining"]![0]!.observedValue, true)
    assert.match(draining.body.checks["bus:draining"]![0]!.output!, /draining/)
    assert.equal(draining.body.checks["consumers:backlog"]![0]!.status, "pass", "the backlog itself is fine")
    await closing
    assert.equal((await get(app, "/health/ready")).status, 200)
  }))

test("health: user checks report observations, failures, defects and timeouts; ready: false stays out of /ready", () =>
  withRuntime(async (runtime) => {
    const checks: ReadonlyArray<HealthCheck> = [
      { name: "disk:utilization", run: Effect.succeed({ observedValue: 41, observedUnit: "percent" }) },
      { name: "cache:connections", run: Effect.succeed([{ componentId: "a" }, { componentId: "b", status: "warn", output: "slow" }]) },
      { name: "ledger:responseTime", ready: false, run: Effect.fail(new Error("ledger said no")) },
      { name: "crashy:status", ready: false, run: Effect.die(new Error("boom")) },
      { name: "stuck:responseTime", ready: false, timeout: "50 millis", run: Effect.never }
    ]
    const app = appOf({ runtime, checks })
    const ready = await get(app, "/health/ready")
    assert.equal(ready.status, 200)
    assert.equal(ready.body.status, "warn", "the worst of the ready checks")
    assert.deepEqual(ready.body.checks["disk:utilization"]!.map(({ time: _, ...rest }) => rest), [
      { observedValue: 41, observedUnit: "percent", status: "pass" }
    ])
    assert.deepEqual(ready.body.checks["cache:connections"]!.map((c) => [c.componentId, c.status]), [["a", "pass"], ["b", "warn"]])
    assert.equal(ready.body.checks["ledger:responseTime"], undefined)

    const started = Date.now()
    const full = await get(app, "/health")
    // Each check is bounded by its own timeout (the stuck one's output below says 50 ms, not the router's 2 s); the
    // wall-clock bound is only against a hang, generous for a loaded machine.
    assert.ok(Date.now() - started < 10_000, "checks run at once, each bounded by its own timeout")
    assert.equal(full.status, 503)
    assert.equal(full.body.checks["ledger:responseTime"]![0]!.output, "ledger said no")
    assert.equal(full.body.checks["crashy:status"]![0]!.output, "defect: boom")
    assert.equal(full.body.checks["stuck:responseTime"]![0]!.output, "did not finish within 50 ms")
  }))

test("health: the router's timeout runs on the runtime's clock (TestClock): a hung check fails after exactly that long", () =>
  withRuntime(async (runtime) => {
    const app = appOf({ runtime, timeout: "3 seconds", checks: [{ name: "hung:responseTime", run: Effect.never }] })
    const pending = Promise.resolve(app.request("/health/ready"))
    let settled = false
    void pending.then(() => (settled = true))
    // Let the request's fiber start its timers, then move the clock in steps until it answers.
    await runtime.runPromise(Effect.yieldNow)
    await runtime.runPromise(TestClock.adjust("2999 millis"))
    await new Promise((resolve) => setTimeout(resolve, 20))
    assert.equal(settled, false, "still waiting 1 ms before the timeout")
    await runtime.runPromise(TestClock.adjust("1 millis"))
    const response = await pending
    assert.equal(response.status, 503)
    const body = (await response.json()) as HealthResponse
    assert.equal(body.checks["hung:responseTime"]![0]!.output, "did not finish within 3000 ms")
    assert.equal(body.checks["bus:responseTime"]![0]!.status, "pass", "the other checks are not held up")
  }, Layer.mergeAll(EventBus.layerMemory(), TestClock.layer())))

test("health: the heartbeat publishes a probe and reports its round trip; a probe that never comes back fails", async () => {
  await withRuntime(async (runtime) => {
    const full = await get(appOf({ runtime }), "/health")
    const beat = full.body.checks["heartbeat:responseTime"]![0]!
    assert.equal(beat.status, "pass")
    assert.equal(beat.componentId, "cqbus.health.v1.probe")
    assert.equal(beat.observedUnit, "ms")
    assert.ok(typeof beat.observedValue === "number" && beat.observedValue >= 0)
    const stored = await runtime.runPromise(Effect.flatMap(Effect.service(MemoryTransport.MemoryTransport), (m) => m.messages()))
    assert.equal(stored.length, 1, "one probe was published")
    assert.match(stored[0]!.eventId, /^health-probe-/)
    assert.equal((await get(appOf({ runtime }), "/health/ready")).body.checks["heartbeat:responseTime"], undefined,
      "not part of /ready by default")
    const ready = await get(appOf({ runtime, heartbeat: "ready" }), "/health/ready")
    assert.equal(ready.body.checks["heartbeat:responseTime"]![0]!.status, "pass")
    assert.equal((await get(appOf({ runtime, heartbeat: false }), "/health")).body.checks["heartbeat:responseTime"], undefined)
  }, Heartbeat.layer().pipe(Layer.provideMerge(EventBus.layerMemory())))

  // A transport whose probes are acknowledged but never delivered: `check` passes, the heartbeat does not. (A publish
  // middleware cannot stand in for it: the probes are internal publishes, which skip the bus-wide middleware.)
  const swallowing = Layer.effect(
    Transport.Transport,
    Effect.map(Effect.service(Transport.Transport), (memory): TransportShape => ({
      ...memory,
      publish: (message) =>
        message.topic === "cqbus.health.v1.probe"
          ? Effect.succeed({ topic: message.topic, stream: "memory", sequence: 0, duplicate: false })
          : memory.publish(message)
    }))
  ).pipe(Layer.provide(MemoryTransport.layer()))
  const swallow = EventBus.layer().pipe(Layer.provideMerge(swallowing))
  await withRuntime(async (runtime) => {
    const full = await get(appOf({ runtime, timeout: "100 millis" }), "/health")
    assert.equal(full.status, 503)
    assert.equal(full.body.checks["bus:responseTime"]![0]!.status, "pass")
    assert.deepEqual(
      [full.body.checks["heartbeat:responseTime"]![0]!.status, full.body.checks["heartbeat:responseTime"]![0]!.output],
      ["fail", "did not finish within 100 ms"]
    )
  }, Heartbeat.layer().pipe(Layer.provideMerge(swallow)))
})

/** A transport that is the memory one plus a connection (driven by the test) and a `consumers` that fails. */
const brokerLike = (state: SubscriptionRef.SubscriptionRef<ConnectionState>) =>
  Layer.effect(
    Transport.Transport,
    Effect.map(Effect.service(Transport.Transport), (memory): TransportShape => ({
      ...memory,
      name: "broker",
      check: Effect.flatMap(SubscriptionRef.get(state), (s) =>
        s.status === "connected"
          ? Effect.void
          : Effect.fail(new HealthError({ component: "connection", message: `cannot reach ${s.server}: password=hunter2` }))),
      connection: { get: SubscriptionRef.get(state), changes: SubscriptionRef.changes(state) },
      consumers: Effect.fail(new HealthError({ component: "consumers", message: "no answer from nats://alice:s3cret@broker:4222" }))
    }))
  ).pipe(Layer.provide(MemoryTransport.layer()))

test("health: connection state from the capability; no secret of an error, URL or option appears in any response", async () => {
  const state = await Effect.runPromise(SubscriptionRef.make<ConnectionState>({
    status: "connected",
    reconnects: 0,
    lastError: undefined,
    server: "broker:4222"
  }))
  const layer = EventBus.layer().pipe(Layer.provideMerge(brokerLike(state)))
  await withRuntime(async (runtime) => {
    const secretCheck: HealthCheck = {
      name: "vault:responseTime",
      run: Effect.fail(new Error(
        "login as admin with token=tok_live_123 and Authorization: Bearer abc.def.ghi, seed " +
          `SUAMLK2ZNL35WSMW37E7UD4VZ7ELPKW7DHC3BWBSD2GCZ7IUQQXZIORRBU, key ${"ultra-private-key"}`
      ))
    }
    const app = appOf({ runtime, checks: [secretCheck], secrets: [Redacted.make("ultra-private-key")] })
    const up = await get(app, "/health/ready")
    assert.equal(up.body.checks["bus:connection"]![0]!.observedValue, "connected")
    assert.equal(up.body.checks["bus:connection"]![0]!.componentId, "broker:4222")
    assert.equal(up.body.checks["consumers:backlog"]![0]!.status, "warn", "an unreadable backlog is a concern, not a failure")
    assert.equal(up.body.checks["bus:responseTime"]![0]!.componentId, "broker")

    await Effect.runPromise(SubscriptionRef.set(state, {
      status: "reconnecting",
      reconnects: 3,
      lastError: "connection refused by nats://alice:s3cret@broker:4222",
      server: "nats://alice:s3cret@broker:4222"
    }))
    const down = await get(app, "/health/ready")
    assert.equal(down.status, 503)
    const connection = down.body.checks["bus:connection"]![0]!
    assert.equal(connection.observedValue, "reconnecting")
    assert.match(connection.output!, /^reconnecting \(3 reconnects so far\): connection refused by nats:\/\/\*\*\*@broker:4222$/)
    assert.equal(down.body.checks["bus:responseTime"]![0]!.status, "fail")
    const full = await get(app, "/health")
    for (const response of [up, down, full]) {
      for (const secret of ["s3cret", "alice", "hunter2", "tok_live_123", "abc.def.ghi", "SUAMLK2Z", "ultra-private-key"]) {
        assert.ok(!response.text.includes(secret), `${secret} leaked: ${response.text}`)
      }
    }
    assert.match(full.body.checks["vault:responseTime"]![0]!.output!, /token=\*\*\*.*Authorization: Bearer \*\*\*.*seed \*\*\*.*key \*\*\*/)
  }, layer)
})

test("health: a Context works as the runtime too", async () => {
  await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const context = yield* Layer.build(EventBus.layerMemory())
    const { body, status } = yield* Effect.promise(() => get(appOf({ runtime: context }), "/health/ready"))
    assert.equal(status, 200)
    assert.equal(body.status, "pass")
    assert.ok(Context.getOption(context, EventBus.EventBus)._tag === "Some")
  })))
})

// ------------------------------------------------------------------------------------------------ helpers

/** A scope that lives as long as the runtime, so a test can hang subscriptions on it. */
class RuntimeScope extends Context.Service<RuntimeScope, Scope.Scope>()("test/RuntimeScope") {}

const busWithScope = (): Layer.Layer<Services | RuntimeScope> =>
  Layer.mergeAll(Layer.orDie(EventBus.layerMemory()), Layer.effect(RuntimeScope, Effect.scope))

