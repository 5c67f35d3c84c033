// Per-topic persistence on the memory transport, beyond the conformance suite: what an ephemeral publish stores (nothing),
// how a live subscription drains when it closes (running and received events finish within drainTimeout, the rest is
// dead-lettered), what shutdown leaves in the dead letters, live subscriptions in `consumers`/`groups`, the transport's
// `persistence` option, `EventBusConfig.topics` at start-up, `TopicConfig.parseList`, and `bus.topics` over a transport
// without the capability. Virtual time throughout (TestClock).
import assert from "node:assert/strict"
import { test } from "node:test"
import {
  ConfigError,
  defineEvent,
  EventBus,
  MemoryTransport,
  type MemoryTransportOptions,
  PublishError,
  Reject,
  RetryLater,
  TopicConfig,
  TopicConfigError,
  Transport
} from "@cqbus/core"
import { failureOf, letTimePass, runScoped, waitUntil } from "@cqbus/testkit"
import { AssetCreatedSchema } from "@cqbus/testkit/events"
import { fromBinary } from "@bufbuild/protobuf"
import { Context, Effect, Exit, Fiber, Layer, Option, Scope } from "effect"
import { TestClock } from "effect/testing"

const Live = defineEvent(AssetCreatedSchema, { topic: "cqc.live.v1.reading" })

type Env = EventBus.EventBus | MemoryTransport.MemoryTransport | Scope.Scope

const withMemory = <A, E>(memory: MemoryTransportOptions, program: Effect.Effect<A, E, Env>) =>
  runScoped(EventBus.layerMemory({ memory }), program)

/** Every topic ephemeral unless configured otherwise. */
const ephemeral = <A, E>(program: Effect.Effect<A, E, Env>) => withMemory({ persistence: "ephemeral" }, program)

const assetIdOf = (body: Uint8Array): string => fromBinary(AssetCreatedSchema, body).assetId

/** Builds a layer that must fail, and answers its typed failure. */
const buildFailure = <A, E>(layer: Layer.Layer<A, E>): Promise<E> =>
  Effect.runPromise(Effect.scoped(Effect.exit(Layer.build(layer)))).then(failureOf)

test("memory ephemeral: a publish stores nothing, reaches only live subscriptions of its topic and is not deduplicated", () =>
  ephemeral(Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const memory = yield* MemoryTransport.MemoryTransport
    const exact: Array<string> = []
    const pattern: Array<string> = []
    yield* bus.subscribe(Live, (e) => Effect.sync(() => exact.push(e.assetId)))
    // A pattern reads stored events only, even where every topic is ephemeral by default.
    yield* bus.subscribeRaw("cqc.live.v1.*", (_, d) => Effect.sync(() => pattern.push(d.subject)), { group: "all_live" })
    const first = yield* bus.publish(Live, { assetId: "e1" }, { eventId: "same" })
    const second = yield* bus.publish(Live, { assetId: "e2" }, { eventId: "same" })
    assert.deepEqual(first, { topic: Live.topic, stream: "", sequence: 0, duplicate: false, ephemeral: true })
    assert.deepEqual(second, first, "no dedupe on an ephemeral topic")
    yield* waitUntil(() => exact.length === 2, "the live subscription has both")
    yield* bus.publish(defineEvent(AssetCreatedSchema, { topic: "cqc.live.v1.nobody" }), { assetId: "lost" })
    yield* letTimePass(100)
    assert.deepEqual(exact, ["e1", "e2"])
    assert.deepEqual(pattern, [], "nothing ephemeral reaches a pattern subscription")
    assert.deepEqual(yield* memory.messages(), [], "nothing is stored")
    assert.deepEqual(yield* memory.deadLetters, [], "an event nobody listens to is not a dead letter")
    const tooLarge = yield* Effect.flip(bus.publishRaw(Live.topic, new Uint8Array(2 * 1024 * 1024)))
    assert.ok(tooLarge instanceof PublishError && tooLarge.reason === "TooLarge", "the size limit holds all the same")
    // Configured persistent: stored, so the pattern subscription reads it too.
    yield* bus.topics.configure("cqc.live.v1.kept", "persistent")
    const kept = yield* bus.publishRaw("cqc.live.v1.kept", new Uint8Array([1]), { eventId: "kept" })
    assert.equal(kept.ephemeral, undefined)
    assert.deepEqual((yield* memory.messages()).map((m) => m.eventId), ["kept"])
    yield* waitUntil(() => pattern.length === 1, "the pattern subscription reads the stored event")
  })))

test("memory ephemeral: closing lets the running handler and the received events run within drainTimeout; the rest is dead-lettered", () =>
  ephemeral(Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const memory = yield* MemoryTransport.MemoryTransport
    const started: Array<string> = []
    const finished: Array<string> = []
    const scope = yield* Scope.make()
    // One at a time: e0 takes 500 ms, e1 would take 2 s, e2 waits its turn; the drain budget is 1 s.
    yield* bus.subscribe(Live, (e) =>
      Effect.gen(function*() {
        started.push(e.assetId)
        yield* Effect.sleep(e.assetId === "e0" ? "500 millis" : "2 seconds")
        finished.push(e.assetId)
      }), { concurrency: 1, drainTimeout: "1 second" }).pipe(Scope.provide(scope))
    for (const assetId of ["e0", "e1", "e2"]) yield* bus.publish(Live, { assetId })
    yield* waitUntil(() => started.length === 1, "e0 runs")
    const live = (yield* memory.consumers).find((c) => c.topic === Live.topic)!
    assert.deepEqual([live.pending, live.ackPending, live.redelivered], [2, 1, 0], "two received and waiting, one running")
    const closing = yield* Effect.forkChild(Scope.close(scope, Exit.void))
    yield* letTimePass(10)
    yield* bus.publish(Live, { assetId: "after-close" })
    yield* waitUntil(() => closing.pollUnsafe() !== undefined, "the drain budget runs out and closing completes", { within: 5_000 })
    yield* Fiber.join(closing)
    assert.deepEqual(finished, ["e0"], "the running handler finished")
    assert.deepEqual(started, ["e0", "e1"], "a received event still starts while draining; nothing after the close")
    const letters = yield* memory.deadLetters
    assert.deepEqual(letters.map((l) => [assetIdOf(l.body), l.errorTag]), [["e1", "Interrupted"], ["e2", "Interrupted"]])
    assert.match(letters[0]!.reason, /^interrupted: the handler did not finish within drainTimeout/)
    assert.match(letters[1]!.reason, /^not processed before the subscription closed/)
    for (const letter of letters) {
      assert.match(letter.reason, /topic cqc\.live\.v1\.reading is ephemeral/)
      assert.deepEqual([letter.deliveryCount, letter.sequence, letter.group], [1, undefined, undefined])
    }
    assert.deepEqual(yield* memory.groups, [], "the live subscription is gone")
  })))

test("memory ephemeral: a closing member's received events go to the other member of its group, not to the dead letters", () =>
  ephemeral(Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const memory = yield* MemoryTransport.MemoryTransport
    const seen: Array<string> = []
    const handledBy: Array<readonly [string, string]> = []
    const record = (member: string) => (e: { readonly assetId: string }) =>
      Effect.sync(() => {
        seen.push(e.assetId)
        handledBy.push([member, e.assetId])
      })
    const leaving = yield* Scope.make()
    yield* bus.subscribe(Live, record("leaving"), { group: "pair" }).pipe(Scope.provide(leaving))
    yield* bus.subscribe(Live, record("staying"), { group: "pair" })
    // Published and closed without a yield in between: half are handed to the leaving member, not started yet.
    for (let i = 0; i < 10; i++) yield* bus.publish(Live, { assetId: `p${i}` })
    const before = (yield* memory.groups).find((g) => g.group === "pair")!
    assert.ok(before.pending > 0, `the leaving member holds received, unstarted events when it closes (${before.pending})`)
    assert.equal(handledBy.length, 0, "nothing has started before the close")
    yield* Scope.close(leaving, Exit.void)
    yield* waitUntil(() => seen.length >= 10, "the other member handles all 10")
    yield* letTimePass(50)
    assert.deepEqual([...seen].sort(), Array.from({ length: 10 }, (_, i) => `p${i}`).sort(), "each event once")
    assert.deepEqual(handledBy.filter(([member]) => member === "leaving"), [], "the leaving member started none of them")
    assert.deepEqual(yield* memory.deadLetters, [])
    const groups = yield* memory.groups
    assert.equal(groups.length, 1)
    assert.deepEqual([groups[0]!.group, groups[0]!.members, groups[0]!.pending], ["pair", 1, 0])
    assert.match(groups[0]!.consumer, /^~live-\d+$/)
  })))

test("memory ephemeral: under ackPolicy \"none\" every outcome but Ack is still dead-lettered", () =>
  ephemeral(Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const memory = yield* MemoryTransport.MemoryTransport
    const seen: Array<string> = []
    yield* bus.subscribe(Live, (event) =>
      Effect.suspend((): Effect.Effect<void, RetryLater | Reject> => {
        seen.push(event.assetId)
        if (event.assetId === "retry") return Effect.fail(new RetryLater({ delay: "100 millis", reason: "not yet" }))
        if (event.assetId === "reject") return Effect.fail(new Reject({ reason: "unwanted" }))
        return Effect.void
      }), { ackPolicy: "none" })
    for (const assetId of ["ok", "retry", "reject"]) yield* bus.publish(Live, { assetId })
    yield* waitUntil(() => seen.length === 3, "each event is delivered")
    yield* letTimePass(1_000)
    assert.deepEqual(seen, ["ok", "retry", "reject"], "each once, never again")
    const letters = yield* memory.deadLetters
    assert.deepEqual(letters.map((l) => assetIdOf(l.body)), ["retry", "reject"])
    assert.match(letters[0]!.reason, /^not redelivered \(ephemeral topic\)/)
  })))

test("memory ephemeral: at shutdown a handler that does not finish within drainTimeout is interrupted and dead-lettered", () =>
  Effect.runPromise(Effect.gen(function*() {
    const scope = yield* Scope.make()
    const context = yield* Layer.buildWithScope(EventBus.layerMemory({ memory: { persistence: "ephemeral" } }), scope)
    const bus = Context.get(context, EventBus.EventBus)
    const memory = Context.get(context, MemoryTransport.MemoryTransport)
    let running = 0
    let interrupted = 0
    yield* bus.subscribe(Live, () =>
      Effect.andThen(Effect.sync(() => running++), Effect.never).pipe(Effect.onInterrupt(() =>
        Effect.sync(() => interrupted++)
      )), { group: "stuck", drainTimeout: "200 millis" }).pipe(Scope.provide(scope))
    yield* bus.publish(Live, { assetId: "stuck" })
    yield* waitUntil(() => running === 1, "the handler runs")
    const closing = yield* Effect.forkChild(Scope.close(scope, Exit.void))
    yield* waitUntil(() => closing.pollUnsafe() !== undefined, "shutdown completes after the drain budget", { within: 5_000 })
    assert.equal(interrupted, 1, "the handler was interrupted")
    const letters = yield* memory.deadLetters
    assert.deepEqual(letters.map((l) => [assetIdOf(l.body), l.errorTag, l.group]), [["stuck", "Interrupted", "stuck"]])
    assert.match(letters[0]!.reason, /did not finish within drainTimeout/)
  }).pipe(Effect.provide(TestClock.layer()))))

test("memory ephemeral: a live subscription keeps its persistence and also receives persistent publishes on its topic, once", () =>
  ephemeral(Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const memory = yield* MemoryTransport.MemoryTransport
    const live: Array<string> = []
    const stored: Array<string> = []
    yield* bus.subscribe(Live, (e, d) => Effect.sync(() => live.push(`${e.assetId}@${d.sequence}`)))
    yield* bus.topics.configure(Live.topic, "persistent")
    const ack = yield* bus.publish(Live, { assetId: "p1" })
    assert.equal(ack.sequence, 1)
    yield* bus.subscribe(Live, (e, d) => Effect.sync(() => stored.push(`${e.assetId}@${d.sequence}`)), { group: "log" })
    yield* waitUntil(() => live.length === 1 && stored.length === 1, "both have p1")
    yield* bus.topics.configure(Live.topic, "ephemeral")
    yield* bus.publish(Live, { assetId: "e2" })
    yield* waitUntil(() => live.length === 2, "the live subscription has e2")
    yield* letTimePass(100)
    assert.deepEqual(live, ["p1@undefined", "e2@undefined"], "once each, without a sequence")
    assert.deepEqual(stored, ["p1@1"], "the log subscription reads what was stored only")
    const consumers = yield* memory.consumers
    assert.deepEqual(consumers.map((c) => [c.consumer.startsWith("~live-"), c.group, c.pending]).sort(),
      [[false, "log", 0], [true, undefined, 0]])
  })))

test("memory ephemeral: subscribing to an ephemeral topic with a start from stored events is refused; patterns never are", () =>
  ephemeral(Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const error = yield* Effect.flip(bus.subscribe(Live, () => Effect.void, { deliverPolicy: { fromSequence: 3 } }))
    assert.equal(error._tag, "SubscribeError")
    assert.equal(
      error.message,
      "cannot subscribe to cqc.live.v1.reading with deliverPolicy fromSequence: topic cqc.live.v1.reading is ephemeral: nothing is stored to start from"
    )
    yield* bus.subscribeRaw("cqc.live.v1.>", () => Effect.void, { deliverPolicy: "last", replay: "original" })
  })))

test("memory ephemeral: the persistence option defaults to persistent, \"auto\" stores, a bad value is a ConfigError", async () => {
  for (const persistence of [undefined, "persistent", "auto"] as const) {
    await withMemory(persistence === undefined ? {} : { persistence }, Effect.gen(function*() {
      const bus = yield* EventBus.EventBus
      const ack = yield* bus.publish(Live, { assetId: "kept" })
      assert.equal(ack.ephemeral, undefined, `${persistence}: stored`)
      const entry = yield* bus.topics.configure(Live.topic, "auto")
      assert.deepEqual(entry, { topic: Live.topic, persistence: "auto", effective: "persistent", stream: "memory" })
    }))
  }
  const error = await buildFailure(EventBus.layerMemory({ memory: { persistence: "sometimes" as "auto" } }))
  assert.ok(error instanceof ConfigError)
  assert.equal(error.option, "persistence")
  assert.match(error.message, /must be one of "persistent", "ephemeral", "auto", got "sometimes"/)
})

test("memory ephemeral: EventBusConfig.topics is applied at start-up; a refused topic fails with a ConfigError naming it", async () => {
  await runScoped(
    EventBus.layerMemory({
      topics: { "cqc.live.v1.b": "ephemeral", "cqc.live.v1.a": { persistence: "persistent", description: "audit" } }
    }),
    Effect.gen(function*() {
      const bus = yield* EventBus.EventBus
      assert.deepEqual(yield* bus.topics.list, [
        { topic: "cqc.live.v1.a", persistence: "persistent", description: "audit", effective: "persistent", stream: "memory" },
        { topic: "cqc.live.v1.b", persistence: "ephemeral", effective: "ephemeral" }
      ])
      const ack = yield* bus.publishRaw("cqc.live.v1.b", new Uint8Array([1]))
      assert.equal(ack.ephemeral, true)
    })
  )
  const badName = await buildFailure(EventBus.layerMemory({ topics: { "cqc.live..b": "ephemeral" } }))
  assert.ok(badName instanceof ConfigError)
  assert.equal(badName.option, "topics.cqc.live..b")
  assert.match(badName.message, /empty token/)
  const badSetting = await buildFailure(EventBus.layerMemory({ topics: { "cqc.live.v1.c": "never" as "auto" } }))
  assert.ok(badSetting instanceof ConfigError)
  assert.equal(badSetting.option, "topics.cqc.live.v1.c")
  assert.match(badSetting.message, /must be one of/)
})

test("TopicConfig.parseList reads topic=persistence pairs and names the first bad one", () => {
  assert.deepEqual(TopicConfig.parseList("CQBUS_TOPICS", " a.b=ephemeral , c.d=persistent,,e.f = auto "), {
    topics: { "a.b": "ephemeral", "c.d": "persistent", "e.f": "auto" }
  })
  assert.deepEqual(TopicConfig.parseList("CQBUS_TOPICS", ""), { topics: {} })
  for (const [text, pair] of [["a.b=ephemeral,c.d", "c.d"], ["=ephemeral", "=ephemeral"], ["a.b=sometimes", "a.b=sometimes"]]) {
    const parsed = TopicConfig.parseList("CQBUS_TOPICS", text!)
    assert.ok("problem" in parsed, `${text} is refused`)
    assert.equal(parsed.problem.option, "CQBUS_TOPICS")
    assert.ok(parsed.problem.message.endsWith(`got ${JSON.stringify(pair)}`), parsed.problem.message)
  }
})

test("bus.topics over a transport without the capability: configure fails Unsupported, get is None, list is empty", () =>
  runScoped(
    EventBus.layer().pipe(
      Layer.provide(Layer.effect(
        Transport.Transport,
        Effect.map(MemoryTransport.make(), ({ topics: _, ...withoutTopics }): Transport.TransportShape => withoutTopics)
      ))
    ),
    Effect.gen(function*() {
      const bus = yield* EventBus.EventBus
      const error = yield* Effect.flip(bus.topics.configure("cqc.live.v1.x", "ephemeral"))
      assert.ok(error instanceof TopicConfigError)
      assert.equal(error.reason, "Unsupported")
      assert.match(error.message, /the memory backend has no per-topic persistence/)
      assert.ok(Option.isNone(yield* bus.topics.get("cqc.live.v1.x")))
      assert.deepEqual(yield* bus.topics.list, [])
      assert.equal(yield* bus.topics.remove("cqc.live.v1.x"), false)
    })
  ))
