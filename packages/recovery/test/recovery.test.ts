import assert from "node:assert/strict"
import { test } from "node:test"
import { Backoff, EventBus, MemoryTransport } from "@cqbus/core"
import { HandlerDefect, recovery } from "@cqbus/recovery"
import { retry } from "@cqbus/retry"
import { letTimePass, runScoped, testDelivery, waitUntil } from "@cqbus/testkit"
import { AssetCreatedEvent } from "@cqbus/testkit/events"
import { Cause, Effect, Logger, pipe } from "effect"

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
    const bus = yield* EventBus.EventBus
    const memory = yield* MemoryTransport.MemoryTransport
    let runs = 0
    const handler = pipe(
      (_: unknown) =>
        Effect.sync(() => {
          runs++
          throw new Error("bug")
        }),
      recovery({ log: false }),
      retry({ times: 2, initial: "1 millis" })
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

test("the stack is logged once per message: in-process retries and redeliveries of the same defect log one line", async () => {
  const lines: Array<{ readonly message: string; readonly stack: boolean }> = []
  const logger = Logger.make(({ cause, message }) => {
    const text = Array.isArray(message) ? message.map(String).join(" ") : String(message)
    if (text.startsWith("handler defect")) lines.push({ message: text, stack: Cause.hasDies(cause) })
  })
  let runs = 0
  await runScoped(
    EventBus.layerMemory({ logFailures: false }),
    Effect.gen(function*() {
      const bus = yield* EventBus.EventBus
      const memory = yield* MemoryTransport.MemoryTransport
      const handler = pipe(
        (event: { readonly assetId: string }) =>
          Effect.sync(() => {
            runs++
            throw new Error(`bug in ${event.assetId}`)
          }),
        recovery(),
        retry({ times: 2, initial: "10 millis" })
      )
      yield* bus.subscribe(AssetCreatedEvent, handler, { group: "buggy", maxDeliver: 2, backoff: Backoff.constant("1 second") })
      yield* bus.publish(AssetCreatedEvent, { assetId: "a" }, { eventId: "evt-a" })
      yield* bus.publish(AssetCreatedEvent, { assetId: "b" }, { eventId: "evt-b" })
      yield* waitUntil(() => runs === 12, "two messages, two deliveries each, three runs per delivery")
      yield* letTimePass(100)
      assert.equal((yield* memory.deadLetters).length, 2)
    }).pipe(Effect.provide(Logger.layer([logger])))
  )
  assert.equal(lines.length, 12, "every recovered defect is still logged")
  const withStack = lines.filter((l) => l.stack).map((l) => l.message)
  assert.equal(withStack.length, 2, "one stack per message")
  assert.ok(withStack.some((m) => m.includes("event evt-a, attempt 1")) && withStack.some((m) => m.includes("event evt-b, attempt 1")))
  const repeat = lines.find((l) => !l.stack && l.message.includes("evt-a, attempt 2"))
  assert.match(repeat!.message, /: Error: bug in a \(the stack was logged when this event first died of it\)$/)
})
