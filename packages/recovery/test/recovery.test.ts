import assert from "node:assert/strict"
import { test } from "node:test"
import { EventBus, MemoryTransport } from "@cqbus/core"
import { HandlerDefect, recovery } from "@cqbus/recovery"
import { retry } from "@cqbus/retry"
import { letTimePass, runScoped, testDelivery, waitUntil } from "@cqbus/testkit"
import { AssetCreatedEvent } from "@cqbus/testkit/events"
import { Effect, Logger, pipe } from "effect"

const delivery = testDelivery({ attempt: 2 })

/** Runs an effect with a logger that records each message. */
const withLogs = <A, E>(effect: Effect.Effect<A, E>) => {
  const lines: Array<string> = []
  const logger = Logger.make(({ logLevel, message }) => {
    lines.push(`${logLevel}: ${Array.isArray(message) ? message.map(String).join(" ") : String(message)}`)
  })
  return { lines, run: Effect.runPromise(effect.pipe(Effect.provide(Logger.layer([logger])))) }
}

test("a thrown exception becomes a HandlerDefect with its message and stack, logged once", async () => {
  const throwing = (_: string) =>
    Effect.sync(() => {
      throw new TypeError("cannot read properties of undefined")
    })
  const { lines, run } = withLogs(Effect.flip(recovery()(throwing)("x", delivery)))
  const error = await run
  assert.ok(error instanceof HandlerDefect)
  assert.equal(error._tag, "HandlerDefect")
  assert.equal(error.message, "TypeError: cannot read properties of undefined")
  assert.match(error.defectStack ?? "", /recovery\.test\.ts/)
  assert.equal(error.topic, "cqc.events.v1.test")
  assert.ok(error.defect instanceof TypeError)
  assert.equal(lines.length, 1)
  assert.match(lines[0]!, /Error: handler defect on cqc\.events\.v1\.test \(event e-1, attempt 2\)/)
})

test("Effect.die, a handler that throws before returning an Effect, and a non-Error defect are all recovered", async () => {
  const cases = [
    (_: string) => Effect.die("plain string"),
    (_: string): Effect.Effect<void> => {
      throw new RangeError("sync throw")
    }
  ]
  const messages: Array<string> = []
  for (const handler of cases) {
    const error = await Effect.runPromise(Effect.flip(recovery({ log: false })(handler)("x", delivery)))
    assert.ok(error instanceof HandlerDefect)
    messages.push(error.message)
  }
  assert.deepEqual(messages, ["plain string", "RangeError: sync throw"])
})

test("typed failures and successes pass through untouched", async () => {
  const failing = (_: string) => Effect.fail({ _tag: "Busy" } as const)
  const error = await Effect.runPromise(Effect.flip(recovery()(failing)("x", delivery)))
  assert.deepEqual(error, { _tag: "Busy" })
  await Effect.runPromise(recovery()((_: string) => Effect.void)("x", delivery))
})

test("on a bus, retry sees recovered defects, and the dead letter names HandlerDefect", () =>
  runScoped(EventBus.layerMemory(), Effect.gen(function*() {
    const bus = yield* EventBus
    const memory = yield* MemoryTransport
    let runs = 0
    const handler = pipe(
      (_: unknown) =>
        Effect.sync(() => {
          runs++
          throw new Error("bug")
        }),
      recovery({ log: false }),
      retry({ times: 2, delay: "1 millis" })
    )
    yield* bus.subscribe(AssetCreatedEvent, handler, { group: "buggy", maxDeliver: 1 })
    yield* bus.publish(AssetCreatedEvent, { assetId: "x" })
    yield* waitUntil(() => runs === 3, "the run and two in-process retries")
    yield* letTimePass(100)
    const [letter] = yield* memory.deadLetters
    assert.equal(letter?.errorTag, "HandlerDefect")
    assert.match(letter!.reason, /Error: bug/)
    assert.equal(runs, 3)
  })))
