import assert from "node:assert/strict"
import { test } from "node:test"
import { Deferred, Effect, Fiber } from "effect"
import { makeKeyedLanes } from "../../src/internal/lanes.ts"

test("lanes run one effect per key at a time, in arrival order, and different keys side by side", () =>
  Effect.runPromise(Effect.gen(function*() {
    const lanes = makeKeyedLanes(2)
    const log: Array<string> = []
    const gates = new Map<string, Deferred.Deferred<void>>()
    const step = (name: string) =>
      Effect.gen(function*() {
        log.push(`start ${name}`)
        const gate = yield* Deferred.make<void>()
        gates.set(name, gate)
        yield* Deferred.await(gate)
        log.push(`end ${name}`)
      })
    const fibers = yield* Effect.forEach(["a1", "a2", "b1"], (name) => Effect.forkChild(lanes.run(name[0]!, (withPermit) => withPermit(step(name)))))
    yield* Effect.yieldNow
    yield* Effect.yieldNow
    assert.deepEqual(log, ["start a1", "start b1"], "a2 waits for a1; b1 runs beside a1")
    yield* Deferred.succeed(gates.get("a1")!, undefined)
    for (let i = 0; i < 5; i++) yield* Effect.yieldNow
    assert.deepEqual(log, ["start a1", "start b1", "end a1", "start a2"])
    yield* Deferred.succeed(gates.get("a2")!, undefined)
    yield* Deferred.succeed(gates.get("b1")!, undefined)
    yield* Fiber.joinAll(fibers)
    assert.equal(lanes.size(), 0, "finished lanes are forgotten")
  })))

test("lanes never run more effects at once than their concurrency", () =>
  Effect.runPromise(Effect.gen(function*() {
    const lanes = makeKeyedLanes(3)
    let running = 0
    let max = 0
    const work = Effect.gen(function*() {
      running++
      max = Math.max(max, running)
      for (let i = 0; i < 3; i++) yield* Effect.yieldNow
      running--
    })
    yield* Effect.forEach(Array.from({ length: 20 }, (_, i) => `k${i}`), (key) => lanes.run(key, (withPermit) => withPermit(work)), {
      concurrency: "unbounded"
    })
    assert.equal(max, 3)
  })))

test("an interrupted waiter does not let a later effect of its key overtake the running one", () =>
  Effect.runPromise(Effect.gen(function*() {
    const lanes = makeKeyedLanes(4)
    const log: Array<string> = []
    const gate = yield* Deferred.make<void>()
    const first = yield* Effect.forkChild(lanes.run("k", () => Effect.andThen(Deferred.await(gate), Effect.sync(() => log.push("first")))))
    const second = yield* Effect.forkChild(lanes.run("k", () => Effect.sync(() => log.push("second"))))
    const third = yield* Effect.forkChild(lanes.run("k", () => Effect.sync(() => log.push("third"))))
    yield* Effect.yieldNow
    const interrupting = yield* Effect.forkChild(Fiber.interrupt(second))
    for (let i = 0; i < 5; i++) yield* Effect.yieldNow
    assert.deepEqual(log, [], "third still waits while first runs")
    yield* Deferred.succeed(gate, undefined)
    yield* Fiber.join(first)
    yield* Fiber.join(interrupting)
    yield* Fiber.join(third)
    assert.deepEqual(log, ["first", "third"])
  })))

test("a body waiting outside its permit holds its key but lets other keys run", () =>
  Effect.runPromise(Effect.gen(function*() {
    const lanes = makeKeyedLanes(1)
    const log: Array<string> = []
    const gate = yield* Deferred.make<void>()
    const parked = yield* Effect.forkChild(lanes.run("parked", (withPermit) =>
      Effect.andThen(withPermit(Effect.sync(() => log.push("parked try 1"))),
        Effect.andThen(Deferred.await(gate), withPermit(Effect.sync(() => log.push("parked try 2")))))))
    const behind = yield* Effect.forkChild(lanes.run("parked", (withPermit) => withPermit(Effect.sync(() => log.push("parked next")))))
    for (let i = 0; i < 3; i++) yield* Effect.yieldNow
    yield* lanes.run("other", (withPermit) => withPermit(Effect.sync(() => log.push("other"))))
    assert.deepEqual(log, ["parked try 1", "other"], "the only permit is free while the parked key waits")
    yield* Deferred.succeed(gate, undefined)
    yield* Fiber.join(parked)
    yield* Fiber.join(behind)
    assert.deepEqual(log, ["parked try 1", "other", "parked try 2", "parked next"])
  })))
