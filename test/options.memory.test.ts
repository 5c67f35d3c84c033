// Every option of the core surfaces is validated where it is given, on the in-memory backend: the bus layer's
// configuration and the memory transport's options (ConfigError), `subscribe` (SubscribeError InvalidOptions),
// `publish`/`publishRaw`/`publishAll` (PublishError InvalidOptions) and the backoff constructors (a thrown
// ConfigError); request-reply's options are pinned in packages/rpc/test/options.test.ts. Each bad value fails with the typed
// error naming the option and its range; each boundary value is accepted; and fast-check throws arbitrary values at
// the numeric, duration and name options: each run passes or fails with the typed error, never a defect or a hang.
import {
  Backoff,
  ConfigError,
  defineEvent,
  EventBus,
  PublishError,
  SubscribeError,
  type SubscribeOptions,
  timeout
} from "@cqbus/core"
import { runScoped } from "@cqbus/testkit"
import { AssetCreatedEvent, AssetCreatedSchema } from "@cqbus/testkit/events"
import { Cause, Duration, Effect, Exit, Layer, Result } from "effect"
import fc from "fast-check"
import assert from "node:assert/strict"
import { test } from "node:test"

/** Builds a layer and answers its typed failure (or `undefined` when it builds). */
const buildFailure = <A, E>(layer: Layer.Layer<A, E>): Promise<E | undefined> =>
  Effect.runPromise(Effect.scoped(Effect.exit(Layer.build(layer)))).then((exit) => {
    if (Exit.isSuccess(exit)) return undefined
    const found = Cause.findErrorOption(exit.cause)
    assert.ok(found._tag === "Some", `a typed failure, not ${Cause.pretty(exit.cause)}`)
    return found.value
  })

/** Runs a program on a fresh memory bus. */
const onBus = <A, E>(program: Effect.Effect<A, E, EventBus.EventBus | import("effect").Scope.Scope>): Promise<A> =>
  runScoped(EventBus.layerMemory(), program)

test("options: EventBus.layerMemory refuses each bad bus or memory option with a ConfigError naming it and its range", async () => {
  const cases: ReadonlyArray<readonly [Parameters<typeof EventBus.layerMemory>[0], string, RegExp]> = [
    [{ subscribe: { concurrency: 0 } }, "subscribe.concurrency", /subscribe\.concurrency must be an integer from 1 to 10000, got 0/],
    [{ subscribe: { concurrency: 10_001 } }, "subscribe.concurrency", /from 1 to 10000, got 10001/],
    [{ subscribe: { maxDeliver: NaN } }, "subscribe.maxDeliver", /maxDeliver must be an integer from 1 to 10000, got NaN/],
    [{ subscribe: { maxBuffered: 1_000_001 } }, "subscribe.maxBuffered", /from 1 to 1000000, got 1000001/],
    [{ subscribe: { ackWait: -5000 } }, "subscribe.ackWait", /ackWait must be a duration from 100ms to 1d, got -5s/],
    [{ subscribe: { ackWait: 0 } }, "subscribe.ackWait", /from 100ms to 1d, got 0/],
    [{ subscribe: { ackWait: Infinity } }, "subscribe.ackWait", /must be a duration .*got Infinity/],
    [{ subscribe: { ackWait: "5 secs" as never } }, "subscribe.ackWait", /must be a duration .*got "5 secs"/],
    [{ subscribe: { drainTimeout: "2 hours" } }, "subscribe.drainTimeout", /drainTimeout must be a duration from 0 to 1h/],
    [{ subscribe: { ordering: "fifo" as never } }, "subscribe.ordering", /must be one of "none", "key", got "fifo"/],
    [{ subscribe: { maxAckPending: -1 } }, "subscribe.maxAckPending", /subscribe\.maxAckPending must be an integer from 1/],
    [{ subscribe: { inactiveThreshold: 0 } }, "subscribe.inactiveThreshold", /from 1s to 7d, got 0/],
    [{ source: "" }, "source", /source must be a string of 1 to 1024 characters/],
    [{ source: "a\nb" }, "source", /control character at position 1/],
    [{ logFailures: "yes" as never }, "logFailures", /logFailures must be true or false/],
    [{ middleware: [42 as never] }, "middleware[0]", /middleware\[0\] must be a function, got 42/],
    [{ memory: { maxMessagesPerTopic: 0 } }, "maxMessagesPerTopic", /maxMessagesPerTopic must be an integer from 1 to/],
    [{ memory: { maxMessageSize: 64 * 1024 * 1024 + 1 } }, "maxMessageSize", /from 1 to 67108864, got 67108865/],
    [{ memory: { maxAge: -1 } }, "maxAge", /maxAge must be a duration from 1ms to/],
    [{ memory: { duplicateWindow: NaN } }, "duplicateWindow", /duplicateWindow must be a duration/],
    [{ memory: { discard: "oldest" as never } }, "discard", /must be one of "old", "new"/],
    [{ memory: { stream: "a.b" } }, "stream", /stream must be a name of 1 to 255 characters/]
  ]
  for (const [config, option, text] of cases) {
    const error = await buildFailure(EventBus.layerMemory(config))
    assert.ok(error instanceof ConfigError, `${option}: a ConfigError, got ${String(error)}`)
    assert.equal(error.option, option)
    assert.match(error.message, text)
  }
  // Boundaries build.
  for (const config of [
    { subscribe: { concurrency: 1, maxDeliver: 1, maxBuffered: 1, ackWait: "100 millis", drainTimeout: 0 } },
    { subscribe: { concurrency: 10_000, maxDeliver: 10_000, maxBuffered: 1_000_000, ackWait: "1 days", drainTimeout: "1 hours" } },
    { memory: { maxMessagesPerTopic: 1, maxMessageSize: 64 * 1024 * 1024, maxAge: 1, duplicateWindow: 0, stream: "S" } }
  ] as const) {
    assert.equal(await buildFailure(EventBus.layerMemory(config)), undefined, JSON.stringify(config))
  }
})

/** Subscribes with `options` and answers the SubscribeError (or `undefined` when the subscription started). */
const subscribeFailure = (options: unknown) =>
  Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const exit = yield* Effect.exit(Effect.scoped(bus.subscribe(AssetCreatedEvent, () => Effect.void, options as SubscribeOptions)))
    if (Exit.isSuccess(exit)) return undefined
    const found = Cause.findErrorOption(exit.cause)
    assert.ok(found._tag === "Some", `a typed failure, not ${Cause.pretty(exit.cause)}`)
    return found.value
  })

test("options: subscribe refuses each bad option with SubscribeError InvalidOptions naming it; boundaries subscribe", () =>
  onBus(Effect.gen(function*() {
    const cases: ReadonlyArray<readonly [unknown, RegExp]> = [
      [{ concurrency: 0 }, /concurrency must be an integer from 1 to 10000, got 0/],
      [{ concurrency: 1e9 }, /concurrency must be an integer from 1 to 10000, got 1000000000/],
      [{ maxDeliver: 10_001 }, /maxDeliver must be an integer from 1 to 10000, got 10001/],
      [{ maxBuffered: Infinity }, /maxBuffered must be an integer from 1 to 1000000, got Infinity/],
      [{ ackWait: -5000 }, /ackWait must be a duration from 100ms to 1d, got -5s/],
      [{ ackWait: NaN }, /ackWait must be a duration .*got NaN/],
      [{ ackWait: "soon" }, /ackWait must be a duration .*got "soon"/],
      [{ drainTimeout: -1 }, /drainTimeout must be a duration from 0 to 1h, got -1ms/],
      [{ group: "a/b" }, /group must be a name of 1 to 255 characters without .*"\/".*got "a\/b"/],
      [{ group: "a\u0000b" }, /group must be a name .*got "a\\u0000b"/],
      [{ group: "x".repeat(256) }, /group must be a name of 1 to 255 characters/],
      [{ deliverPolicy: { fromSequence: 0 } }, /deliverPolicy\.fromSequence must be an integer from 1 to/],
      [{ deliverPolicy: { fromTime: new Date(NaN) } }, /deliverPolicy.*got an invalid date/],
      [{ deliverPolicy: "latest" }, /deliverPolicy must be "all", "new", "last", "lastPerSubject"/],
      [{ replay: "fast" }, /replay must be one of "instant", "original", got "fast"/],
      [{ ackPolicy: "all" }, /ackPolicy must be one of "explicit", "none", got "all"/],
      [{ maxAckPending: 0 }, /maxAckPending must be an integer from 1 to 10000000, got 0/],
      [{ maxAckPending: 1.5 }, /maxAckPending must be an integer/],
      [{ idleHeartbeat: "10 millis" }, /idleHeartbeat must be a duration from 100ms to 1m, got "10 millis"/],
      [{ inactiveThreshold: "8 days" }, /inactiveThreshold must be a duration from 1s to 7d/],
      [{ group: "g", inactiveThreshold: "5 seconds" }, /inactiveThreshold applies to subscriptions without a group/],
      [{ description: "" }, /description must be a string of 1 to 4096 characters/],
      [{ description: "a\nb" }, /description must be .*control character at position 1/],
      [{ metadata: "team=seeds" }, /metadata must be an object, got "team=seeds"/],
      [{ metadata: { team: 5 } }, /metadata\.team must be a string of 1 to 4096 characters/],
      [{ backoff: "fast" }, /backoff must be a function, got "fast"/],
      [null, /options must be an object, got null/]
    ]
    for (const [options, text] of cases) {
      const error = yield* subscribeFailure(options)
      assert.ok(error instanceof SubscribeError && error.reason === "InvalidOptions", `${String(error)}`)
      assert.match(error.message, text)
    }
    for (const options of [
      { group: "g".repeat(255), concurrency: 10_000, maxDeliver: 10_000, maxBuffered: 1_000_000, ackWait: "1 days" },
      { concurrency: 1, maxDeliver: 1, maxBuffered: 1, ackWait: "100 millis", drainTimeout: 0, ordering: "key" as const },
      { deliverPolicy: "last" as const, replay: "original" as const, maxAckPending: 1, idleHeartbeat: "100 millis" },
      {
        deliverPolicy: "lastPerSubject" as const,
        ackPolicy: "none" as const,
        maxAckPending: 10_000_000,
        idleHeartbeat: "1 minutes",
        inactiveThreshold: "7 days",
        description: "d".repeat(4096),
        metadata: { team: "seeds" }
      },
      { group: "bounds", maxAckPending: 5, ackPolicy: "explicit" as const, replay: "instant" as const }
    ]) {
      assert.equal(yield* subscribeFailure(options), undefined, JSON.stringify(options))
    }
  })))

test("options: publish, publishRaw and publishAll refuse bad options with PublishError InvalidOptions, not retriable", () =>
  onBus(Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const message = { assetId: "a-1", symbol: "ACME" }
    for (const [options, text] of [
      [{ eventId: "" }, /eventId must be a string of 1 to 1024 characters/],
      [{ eventId: "a\rb" }, /eventId must be .* control character at position 1/],
      [{ correlationId: "x".repeat(1025) }, /correlationId must be a string of 1 to 1024/],
      [{ key: "k\nk" }, /key must be .* control character/],
      [{ headers: "traceparent" }, /headers must be an object/]
    ] as const) {
      const error = yield* Effect.flip(bus.publish(AssetCreatedEvent, message, options as never))
      assert.ok(error instanceof PublishError && error.reason === "InvalidOptions" && !error.retriable, String(error))
      assert.match(error.message, text)
      const raw = yield* Effect.flip(bus.publishRaw(AssetCreatedEvent.topic, new Uint8Array(0), options as never))
      assert.ok(raw instanceof PublishError && raw.reason === "InvalidOptions")
    }
    for (const window of [0, NaN, 65_537, 1.5]) {
      const results = yield* bus.publishAll(AssetCreatedEvent, [message, message], { window })
      assert.equal(results.length, 2)
      for (const result of results) {
        assert.ok(Result.isFailure(result) && result.failure instanceof PublishError && result.failure.reason === "InvalidOptions")
        assert.match(result.failure.message, /window must be an integer from 1 to 65536/)
      }
    }
    const notAFunction = yield* bus.publishAll(AssetCreatedEvent, [message], { publish: { eventId: "x" } as never })
    assert.ok(Result.isFailure(notAFunction[0]!) && /publish must be a function/.test(notAFunction[0].failure.message))
    // Boundaries publish.
    yield* bus.publish(AssetCreatedEvent, message, { eventId: "e".repeat(1024), key: "k", correlationId: "c" })
    const all = yield* bus.publishAll(AssetCreatedEvent, [message], { window: 65_536 })
    assert.ok(Result.isSuccess(all[0]!))
    const one = yield* bus.publishAll(AssetCreatedEvent, [message], { window: 1 })
    assert.ok(Result.isSuccess(one[0]!))
  })))

test("options: Backoff constructors throw a ConfigError naming a bad initial, factor, max, jitter or delay", () => {
  for (const [make, option] of [
    [() => Backoff.exponential({ initial: -1 }), "backoff.initial"],
    [() => Backoff.exponential({ factor: 0.5 }), "backoff.factor"],
    [() => Backoff.exponential({ factor: NaN }), "backoff.factor"],
    [() => Backoff.exponential({ max: "2 days" }), "backoff.max"],
    [() => Backoff.exponential({ jitter: 2 }), "backoff.jitter"],
    [() => Backoff.constant("later" as never), "backoff.delay"]
  ] as const) {
    assert.throws(make, (error: unknown) => error instanceof ConfigError && error.option === option, option)
  }
  assert.equal(Duration.toMillis(Backoff.exponential({ initial: 0, factor: 1, max: "1 days", jitter: 1 })(3)), 0)
  assert.doesNotThrow(() => Backoff.constant("1 days"))
})

test("options: defineEvent refuses a key naming no string field; timeout() refuses a duration outside 1 ms to 1 hour", () => {
  assert.throws(() => defineEvent(AssetCreatedSchema, { key: "assetid" as never }), (error: unknown) =>
    error instanceof ConfigError && error.option === "key" &&
    /key must be a string field of cqc\.events\.v1\.AssetCreated \(eventId, assetId, symbol.*\) or a function, got "assetid"/.test(error.message))
  assert.throws(() => defineEvent(AssetCreatedSchema, { key: 5 as never }), (error: unknown) => error instanceof ConfigError)
  assert.throws(() => defineEvent(AssetCreatedSchema, { allowEmptyKey: "no" as never }), (error: unknown) =>
    error instanceof ConfigError && error.option === "allowEmptyKey")
  assert.equal(defineEvent(AssetCreatedSchema, { key: "assetId" }).keyField, "assetId")
  assert.equal(typeof defineEvent(AssetCreatedSchema, { key: (e) => e.symbol }).key, "function")
  for (const bad of [0, -1, NaN, "2 hours", "soon"]) {
    assert.throws(() => timeout(bad as never), (error: unknown) =>
      error instanceof ConfigError && error.option === "timeout" && /timeout must be a duration/.test(error.message), String(bad))
  }
  assert.doesNotThrow(() => timeout("1 millis"))
  assert.doesNotThrow(() => timeout("1 hours"))
})

/** Values a JavaScript caller could pass for a number or a duration: often absent or plausible, often not. */
const numberish = fc.oneof(
  { arbitrary: fc.constant(undefined), weight: 4 },
  { arbitrary: fc.integer({ min: 1, max: 1000 }), weight: 3 },
  { arbitrary: fc.constantFrom("1 second", "100 millis", "1 days", "2 seconds"), weight: 3 },
  { arbitrary: fc.integer({ min: -20_000, max: 2_000_000 }), weight: 1 },
  { arbitrary: fc.double(), weight: 1 },
  { arbitrary: fc.constantFrom(NaN, Infinity, -Infinity, 0, -1, 10_000, 10_001, 1_000_000, 1_000_001), weight: 1 },
  { arbitrary: fc.string({ maxLength: 12 }), weight: 1 },
  { arbitrary: fc.constantFrom("-5 seconds", "99 millis", "25 hours", "5 secs", "Infinity"), weight: 1 }
)

test("property: arbitrary subscribe options either subscribe or fail with SubscribeError InvalidOptions, never a defect", () =>
  onBus(Effect.gen(function*() {
    const runs = fc.sample(
      fc.record({
        concurrency: numberish,
        maxDeliver: numberish,
        maxBuffered: numberish,
        ackWait: numberish,
        drainTimeout: numberish,
        group: fc.oneof(fc.string({ maxLength: 20 }), fc.constantFrom("a/b", "a\u0000b", "ok", "ok-2", "a.b"))
      }, { requiredKeys: [] }),
      { numRuns: 300, seed: 11 }
    )
    let refused = 0
    for (const options of runs) {
      const error = yield* subscribeFailure(options)
      if (error === undefined) continue
      assert.ok(error instanceof SubscribeError && error.reason === "InvalidOptions", `${JSON.stringify(options)}: ${String(error)}`)
      refused++
    }
    console.log(`options property (subscribe): ${JSON.stringify({ runs: runs.length, refused, accepted: runs.length - refused })}`)
    assert.ok(refused > 0 && refused < runs.length, "the sample covers both outcomes")
  })))

test("property: arbitrary bus configuration either builds or fails with ConfigError, never a defect", async () => {
  const runs = fc.sample(
    fc.record({
      subscribe: fc.record({ concurrency: numberish, ackWait: numberish, drainTimeout: numberish }, { requiredKeys: [] }),
      memory: fc.record({ maxMessagesPerTopic: numberish, maxAge: numberish, duplicateWindow: numberish, maxMessageSize: numberish }, {
        requiredKeys: []
      })
    }),
    { numRuns: 200, seed: 12 }
  )
  let refused = 0
  for (const config of runs) {
    const error = await buildFailure(EventBus.layerMemory(config as never))
    if (error === undefined) continue
    assert.ok(error instanceof ConfigError, `${JSON.stringify(config)}: ${String(error)}`)
    refused++
  }
  assert.ok(refused > 0 && refused < runs.length, "the sample covers both outcomes")
})
