/**
 * `Fetch` on the memory transport beyond the conformance cases: the typed errors (a backend without the capability,
 * bad options, one group on two topics), a batch handler that fails as a whole or answers for fewer events than it
 * got, and a deliver policy for a new group. Virtual time throughout.
 */
import assert from "node:assert/strict"
import { test } from "node:test"
import { Backoff, EventBus, Fetch, MemoryTransport, SubscribeError, Transport } from "@cqbus/core"
import { failureOf, letTimePass, runScoped } from "@cqbus/testkit"
import { AssetCreatedEvent, PriceUpdatedEvent } from "@cqbus/testkit/events"
import { Effect, Fiber, Layer } from "effect"

const quiet = { logFailures: false, backoff: Backoff.constant("10 millis") } as const

/** Runs `fetch` to its end, letting virtual time pass until it returns (a partial batch waits for `expires`). */
const settled = <A, E, R>(fetch: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const fiber = yield* Effect.forkChild(fetch)
    for (let i = 0; i < 200 && fiber.pollUnsafe() === undefined; i++) yield* letTimePass(50)
    return yield* Fiber.join(fiber)
  })

test("a transport without the fetch capability fails with SubscribeError Unsupported naming it", async () => {
  // The memory transport seen through a port that lacks `fetch`.
  const withoutFetch = Layer.effect(
    Transport.Transport,
    Effect.map(Effect.service(MemoryTransport.MemoryTransport), ({ fetch: _, ...rest }) => rest)
  ).pipe(Layer.provideMerge(MemoryTransport.layer()))
  const exit = await runScoped(
    withoutFetch,
    Effect.exit(Fetch.batch(AssetCreatedEvent, () => Effect.succeed([]), { group: "g" }))
  )
  const error = failureOf(exit)
  assert.ok(error instanceof SubscribeError)
  assert.equal(error.reason, "Unsupported")
  assert.match(String(error), /^SubscribeError: cannot fetch cqc\.events\.v1\.asset_created: the memory transport cannot fetch batches$/)
})

test("bad options fail with SubscribeError InvalidOptions naming the option and its range", async () => {
  const cases: ReadonlyArray<readonly [unknown, RegExp]> = [
    [{}, /group is required/],
    [{ group: "g", max: 0 }, /max must be an integer from 1 to 10000, got 0/],
    [{ group: "g", expires: "5 secs" }, /expires must be a duration/],
    [{ group: "g", maxDeliver: 0 }, /maxDeliver must be an integer from 1/],
    [{ group: "g", deliverPolicy: "first" }, /deliverPolicy must be/]
  ]
  for (const [options, message] of cases) {
    const exit = await runScoped(
      EventBus.layerMemory(),
      Effect.exit(Fetch.each(AssetCreatedEvent, () => Effect.void, options as Fetch.FetchOptions))
    )
    const error = failureOf(exit)
    assert.ok(error instanceof SubscribeError, `a SubscribeError for ${JSON.stringify(options)}`)
    assert.equal(error.reason, "InvalidOptions")
    assert.match(error.message, message)
  }
})

test("one group cannot fetch two topics", async () => {
  await runScoped(EventBus.layerMemory(), Effect.gen(function*() {
    yield* settled(Fetch.each(AssetCreatedEvent, () => Effect.void, { group: "one", expires: "10 millis" }))
    const error = failureOf(
      yield* Effect.exit(Fetch.each(PriceUpdatedEvent, () => Effect.void, { group: "one", expires: "10 millis" }))
    )
    assert.ok(error instanceof SubscribeError)
    assert.equal(error.reason, "GroupConflict")
    assert.match(error.message, /group one already fetches cqc\.events\.v1\.asset_created/)
  }))
})

test("a batch handler failing as a whole retries every event; a missing result counts as a defect of that event", async () => {
  await runScoped(EventBus.layerMemory(), Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const memory = yield* MemoryTransport.MemoryTransport
    yield* bus.publishAll(AssetCreatedEvent, [{ assetId: "a" }, { assetId: "b" }, { assetId: "c" }])
    const failed = yield* settled(
      Fetch.batch(AssetCreatedEvent, () => Effect.fail(new Error("the bulk upload failed")), {
        group: "bulk",
        max: 3,
        ...quiet
      })
    )
    assert.deepEqual(failed, { fetched: 3, acked: 0, retried: 3, deadLettered: 0 })
    // Only one result for three events, on their last allowed delivery: the two without one are dead-lettered.
    const short = yield* settled(
      Fetch.batch(AssetCreatedEvent, () => Effect.succeed([Fetch.ack]), { group: "bulk", max: 3, maxDeliver: 2, ...quiet })
    )
    assert.deepEqual(short, { fetched: 3, acked: 1, retried: 0, deadLettered: 2 })
    const letters = yield* memory.deadLetters
    assert.deepEqual(letters.map((l) => l.errorTag), ["Defect", "Defect"])
    assert.match(letters[0]!.reason, /returned 1 results for a batch of more events; none for event 1/)
  }))
})

test("a new group starts where its deliverPolicy says; an existing one resumes", async () => {
  await runScoped(EventBus.layerMemory(), Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    yield* bus.publishAll(AssetCreatedEvent, [{ assetId: "old-1" }, { assetId: "old-2" }])
    const seen: Array<string> = []
    const record = Fetch.each(AssetCreatedEvent, (event) => Effect.sync(() => seen.push(event.assetId)), {
      group: "from-new",
      deliverPolicy: "new",
      expires: "100 millis"
    })
    assert.equal((yield* settled(record)).fetched, 0, "a group created with \"new\" skips what was stored")
    yield* bus.publish(AssetCreatedEvent, { assetId: "new-1" })
    assert.equal((yield* settled(record)).fetched, 1)
    assert.deepEqual(seen, ["new-1"])
  }))
})

test("a fetch waiting for its batch gets an event published meanwhile, before expires", async () => {
  await runScoped(EventBus.layerMemory(), Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const fiber = yield* Effect.forkChild(
      Fetch.each(AssetCreatedEvent, () => Effect.void, { group: "waiting", max: 1, expires: "1 hour" })
    )
    yield* letTimePass(100)
    assert.equal(fiber.pollUnsafe(), undefined, "still waiting")
    yield* bus.publish(AssetCreatedEvent, { assetId: "late" })
    yield* letTimePass(10)
    const result = yield* Fiber.join(fiber)
    assert.equal(result.fetched, 1)
  }))
})
