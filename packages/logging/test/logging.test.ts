import assert from "node:assert/strict"
import { test } from "node:test"
import { type Delivery, EventBus, MemoryTransport, type PublishError, type PublishMiddleware, Reject } from "@cqbus/core"
import { logging, loggingPublish } from "@cqbus/logging"
import { recovery } from "@cqbus/recovery"
import { retry } from "@cqbus/retry"
import { captureLogs, letTimePass, type LogLine, runScoped, testDelivery, waitUntil } from "@cqbus/testkit"
import { AssetCreatedEvent } from "@cqbus/testkit/events"
import { Cause, Effect, Fiber, pipe, Result } from "effect"
import { TestClock } from "effect/testing"

const delivery: Delivery = testDelivery({
  topic: "cqc.events.v1.asset_created",
  subject: "cqc.events.v1.asset_created",
  eventId: "e-1",
  attempt: 3,
  headers: {
    "ce-id": "e-1",
    traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    authorization: "Bearer s3cr3t-t0ken",
    "x-api-key": "k3y-v4lue",
    "Nats-Msg-Id": "e-1"
  },
  publishedAt: undefined,
  sequence: 42,
  key: "asset-7",
  group: "search"
})

/** What the delivery's lines carry besides outcome-specific annotations. */
const base = {
  "messaging.operation.type": "process",
  "messaging.destination.name": "cqc.events.v1.asset_created",
  "messaging.message.id": "e-1",
  "cqbus.attempt": 3,
  "messaging.consumer.group.name": "search",
  "cqbus.group": "search"
}
const own = { ...base, "cqbus.key": "asset-7", "cqbus.sequence": 42 }

/**
 * Runs an effect under a `TestClock` with a logger that records every line (level, message, annotations, cause); the
 * minimum log level is `All` unless `minimum` says otherwise. `provide` is the same logger and level for a bus program
 * run with `runScoped` (which adds the `TestClock`).
 */
const captured = () => {
  const { lines, provide } = captureLogs()
  const run = <A, E>(effect: Effect.Effect<A, E>, minimum: "All" | "Info" = "All"): Promise<A> =>
    Effect.runPromise(provide(effect, minimum).pipe(Effect.provide(TestClock.layer())))
  return { lines, provide, run }
}

const summary = (lines: ReadonlyArray<LogLine>) => lines.map((l) => `${l.level} ${l.message}`)

test("success: a start line at Debug, then \"delivery handled\" at Info with the duration from the TestClock", async () => {
  const { lines, run } = captured()
  const handler = logging()((_: string) =>
    Effect.andThen(Effect.sleep("250 millis"), Effect.logInfo("indexing"))
  )
  await run(Effect.gen(function*() {
    const fiber = yield* Effect.forkChild(handler("x", delivery))
    yield* TestClock.adjust("250 millis")
    yield* Fiber.join(fiber)
  }))
  assert.deepEqual(summary(lines), ["Debug delivery start", "Info indexing", "Info delivery handled"])
  assert.deepEqual(lines[0]!.annotations, { ...own, "cqbus.outcome": "start" })
  // The handler's own lines carry the delivery's context too (not the plugin's own key, sequence or outcome).
  assert.deepEqual(lines[1]!.annotations, base)
  assert.deepEqual(lines[2]!.annotations, { ...own, "cqbus.outcome": "handled", "cqbus.duration_ms": 250 })
})

test("typed failure: \"delivery failed\" at Warn with error.type and error.message, and the failure is passed on", async () => {
  const { lines, run } = captured()
  const busy = { _tag: "Busy", message: "try again" } as const
  const errors = await run(Effect.all([
    Effect.flip(logging()((_: string) => Effect.fail(busy))("x", delivery)),
    Effect.flip(logging()((_: string) => Effect.fail(new RangeError("out of range")))("x", delivery))
  ]))
  assert.equal(errors[0], busy, "the very same error reaches the bus")
  assert.ok(errors[1] instanceof RangeError)
  const failed = lines.filter((l) => l.message === "delivery failed")
  assert.deepEqual(failed.map((l) => l.level), ["Warn", "Warn"])
  assert.deepEqual(failed[0]!.annotations, {
    ...own,
    "cqbus.outcome": "failed",
    "cqbus.duration_ms": 0,
    "error.type": "Busy",
    "error.message": "try again"
  })
  assert.equal(failed[1]!.annotations["error.type"], "RangeError", "an Error without _tag is named by its name")
  assert.equal(failed[1]!.annotations["cqbus.attempt"], 3)
})

test("Reject: one \"delivery dead-lettered\" line at Warn, on a bus the message is dead-lettered, no default line", async () => {
  const { lines, provide } = captured()
  await runScoped(
    EventBus.layerMemory({ middleware: [logging()] }),
    provide(Effect.gen(function*() {
      const bus = yield* EventBus.EventBus
      const memory = yield* MemoryTransport.MemoryTransport
      yield* bus.subscribe(
        AssetCreatedEvent,
        (event) => Effect.fail(new Reject({ reason: `unknown symbol ${event.symbol}` })),
        { group: "audit" }
      )
      yield* bus.publish(AssetCreatedEvent, { assetId: "a-1", symbol: "ZZZ" }, { eventId: "evt-1" })
      yield* waitUntil(() => lines.some((l) => l.message === "delivery dead-lettered"), "the rejection is logged")
      yield* letTimePass(50)
      assert.equal((yield* memory.deadLetters).length, 1)
    }))
  )
  const rejected = lines.filter((l) => l.message === "delivery dead-lettered")
  assert.equal(rejected.length, 1)
  assert.equal(rejected[0]!.level, "Warn")
  assert.deepEqual(rejected[0]!.annotations, {
    "messaging.operation.type": "process",
    "messaging.destination.name": "cqc.events.v1.asset_created",
    "messaging.message.id": "evt-1",
    "cqbus.attempt": 1,
    "messaging.consumer.group.name": "audit",
    "cqbus.group": "audit",
    "cqbus.key": "a-1",
    "cqbus.sequence": 1,
    "cqbus.outcome": "dead_letter",
    "cqbus.duration_ms": 0,
    "error.type": "Reject",
    "error.message": "rejected: unknown symbol ZZZ",
    "cqbus.dead_letter.reason": "rejected: unknown symbol ZZZ"
  })
  assert.ok(!lines.some((l) => l.message === "delivery failed"), "a Reject is not also logged as a failure")
  assert.deepEqual(lines.filter((l) => l.level === "Warn").map((l) => l.message), ["delivery dead-lettered"],
    "the bus's default line is replaced by the plugin's")
})

test("the last allowed attempt is logged as \"delivery dead-lettered\" (cqbus.outcome=dead_letter) at Error", async () => {
  const { lines, run } = captured()
  const last = testDelivery({ ...delivery, attempt: 5, maxDeliver: 5 })
  await run(Effect.all([
    Effect.exit(logging()((_: string) => Effect.fail(new RangeError("still down")))("x", last)),
    Effect.exit(logging()((_: string) => Effect.die(new TypeError("bug")))("x", last))
  ]))
  const dead = lines.filter((l) => l.level !== "Debug")
  assert.deepEqual(summary(dead), ["Error delivery dead-lettered", "Error delivery dead-lettered"])
  assert.deepEqual(dead[0]!.annotations, {
    ...own,
    "cqbus.attempt": 5,
    "cqbus.outcome": "dead_letter",
    "cqbus.duration_ms": 0,
    "error.type": "RangeError",
    "error.message": "still down",
    "cqbus.dead_letter.reason": "gave up after 5 deliveries; last error RangeError: still down"
  })
  assert.equal(dead[1]!.annotations["error.type"], "TypeError")
  assert.ok(Cause.hasDies(dead[1]!.cause), "a defect's dead letter carries its cause")
  const quiet = logging({ levels: { deadLetter: "Info" } })((_: string) => Effect.fail("down"))("x", last)
  await run(Effect.exit(quiet))
  assert.equal(lines.at(-1)!.level, "Info", "the dead-letter level is configurable")
})

test("with logging() applied to one subscription (not bus middleware), a failing message is logged by the plugin only", async () => {
  const { lines, provide } = captured()
  await runScoped(
    EventBus.layerMemory(),
    provide(Effect.gen(function*() {
      const bus = yield* EventBus.EventBus
      const memory = yield* MemoryTransport.MemoryTransport
      const handler = pipe((_: unknown) => Effect.fail(new RangeError("down")), logging({ levels: { start: "None" } }))
      yield* bus.subscribe(AssetCreatedEvent, handler, { group: "own", maxDeliver: 3 })
      yield* bus.publish(AssetCreatedEvent, { assetId: "a-1" }, { eventId: "evt-2" })
      yield* waitUntil(() => lines.some((l) => l.message === "delivery dead-lettered"), "the dead letter is logged")
      yield* letTimePass(50)
      assert.equal((yield* memory.deadLetters).length, 1)
    }))
  )
  assert.deepEqual(summary(lines), ["Warn delivery failed", "Warn delivery failed", "Error delivery dead-lettered"])
  assert.deepEqual(lines.map((l) => l.annotations["cqbus.outcome"]), ["failed", "failed", "dead_letter"])
})

test("defect: \"delivery defect\" at Error with the cause (for the stack), and the defect is passed on", async () => {
  const { lines, run } = captured()
  const exit = await run(Effect.exit(
    logging()((_: string) =>
      Effect.sync(() => {
        throw new TypeError("cannot read properties of undefined")
      })
    )("x", delivery)
  ))
  assert.ok(exit._tag === "Failure" && Cause.hasDies(exit.cause), "still a defect for the bus")
  assert.deepEqual(summary(lines), ["Debug delivery start", "Error delivery defect"])
  const line = lines[1]!
  assert.deepEqual(line.annotations, {
    ...own,
    "cqbus.outcome": "defect",
    "cqbus.duration_ms": 0,
    "error.type": "TypeError",
    "error.message": "cannot read properties of undefined"
  })
  const defect = Cause.findDefect(line.cause)
  assert.ok(Result.isSuccess(defect) && defect.success instanceof TypeError, "the logger gets the cause")
  assert.match(String((defect.success as Error).stack), /logging\.test\.ts/)
})

test("an interrupted handler logs \"delivery interrupted\" at Info", async () => {
  const { lines, run } = captured()
  await run(Effect.exit(logging()((_: string) => Effect.interrupt)("x", delivery)))
  assert.deepEqual(summary(lines), ["Debug delivery start", "Info delivery interrupted"])
  assert.equal(lines[1]!.annotations["cqbus.outcome"], "interrupted")
})

test("levels are configurable per outcome, and \"None\" silences one", async () => {
  const { lines, run } = captured()
  const levels = { start: "None", success: "Warn", failure: "None", reject: "Error", defect: "Fatal" } as const
  await run(Effect.all([
    logging({ levels })((_: string) => Effect.void)("x", delivery),
    Effect.exit(logging({ levels })((_: string) => Effect.fail("transient"))("x", delivery)),
    Effect.exit(logging({ levels })((_: string) => Effect.fail(new Reject({ reason: "no" })))("x", delivery)),
    Effect.exit(logging({ levels })((_: string) => Effect.die("bug"))("x", delivery))
  ]))
  assert.deepEqual(summary(lines), ["Warn delivery handled", "Error delivery dead-lettered", "Fatal delivery defect"])
})

test("lines below the fiber's minimum level are not written, and the payload is then not even serialized", async () => {
  const { lines, run } = captured()
  let described = 0
  const handler = logging({ logPayload: true, describe: (e) => (described++, e) })((_: string) => Effect.void)
  await run(handler("x", delivery), "Info")
  assert.deepEqual(summary(lines), ["Info delivery handled"], "Debug start line filtered by MinimumLogLevel Info")
  assert.equal(described, 1)
  lines.length = 0
  await run(logging({ logPayload: true, describe: (e) => (described++, e), levels: { success: "Debug" } })(
    (_: string) => Effect.void
  )("x", delivery), "Info")
  assert.equal(lines.length, 0)
  assert.equal(described, 1, "describe was not called for lines nobody writes")
})

test("the payload is absent by default and present with logPayload: true (JSON by default, or describe)", async () => {
  const event = { assetId: "secret-asset", amount: 10n, raw: new Uint8Array([1, 2, 3, 250]), $unknown: [{ no: 9 }] }
  const handle = (options: Parameters<typeof logging>[0]) => {
    const { lines, run } = captured()
    return run(logging(options)((_: typeof event) => Effect.void)(event, delivery)).then(() => lines)
  }
  const silent = await handle(undefined)
  assert.equal(silent.length, 2)
  assert.ok(silent.every((l) => !("cqbus.payload" in l.annotations)))
  assert.ok(!JSON.stringify(silent.map((l) => l.annotations)).includes("secret-asset"), "no trace of the event")

  const json = await handle({ logPayload: true })
  const expected = `{"assetId":"secret-asset","amount":"10","raw":"AQID+g=="}`
  assert.deepEqual(json.map((l) => l.annotations["cqbus.payload"]), [expected, expected])

  const described = await handle({ logPayload: true, describe: (e) => (e as typeof event).assetId })
  assert.equal(described[1]!.annotations["cqbus.payload"], "secret-asset")

  const bytes = await (() => {
    const { lines, run } = captured()
    return run(logging({ logPayload: true })((_: Uint8Array) => Effect.void)(new Uint8Array([104, 105]), delivery))
      .then(() => lines)
  })()
  assert.equal(bytes[0]!.annotations["cqbus.payload"], "aGk=", "raw bytes as base64")
})

test("headers are logged only from the allow-list, and credential-like headers never", async () => {
  const { lines, run } = captured()
  await run(logging({ headers: ["traceparent", "Authorization", "x-api-key", "nats-msg-id", "absent"] })(
    (_: string) => Effect.void
  )("x", delivery))
  for (const line of lines) {
    assert.equal(line.annotations["cqbus.header.traceparent"], delivery.headers.traceparent)
    assert.equal(line.annotations["cqbus.header.nats-msg-id"], "e-1")
    const headerKeys = Object.keys(line.annotations).filter((k) => k.startsWith("cqbus.header."))
    assert.deepEqual(headerKeys.sort(), ["cqbus.header.nats-msg-id", "cqbus.header.traceparent"])
  }
  const all = JSON.stringify(lines.map((l) => l.annotations))
  assert.ok(!all.includes("s3cr3t") && !all.includes("k3y-v4lue"), "no credential reached the log")
  assert.ok(!all.includes("ce-id"), "headers are not logged without the allow-list")
})

test("outermost in pipe(handler, recovery(), retry(), logging()) it logs the final result once, after the retries", async () => {
  const { lines, run } = captured()
  let runs = 0
  const handler = pipe(
    (_: string) =>
      Effect.sync(() => {
        if (++runs < 3) throw new Error("flaky")
      }),
    recovery({ log: false }),
    retry({ times: 3, initial: "100 millis", factor: 1, jitter: 0 }),
    logging()
  )
  await run(Effect.gen(function*() {
    const fiber = yield* Effect.forkChild(handler("x", delivery))
    yield* TestClock.adjust("1 second")
    yield* Fiber.join(fiber)
  }))
  assert.equal(runs, 3)
  assert.deepEqual(summary(lines), ["Debug delivery start", "Info delivery handled"])
  assert.equal(lines[1]!.annotations["cqbus.duration_ms"], 200, "two retries 100 ms apart, on the TestClock")
})

test("publish success: \"published\" at Debug with stream, sequence, duplicate flag and duration", async () => {
  const { lines, provide } = captured()
  await runScoped(
    EventBus.layerMemory({ publishMiddleware: [loggingPublish({ headers: ["traceparent"] })] }),
    provide(Effect.gen(function*() {
      const bus = yield* EventBus.EventBus
      const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
      yield* bus.publish(AssetCreatedEvent, { assetId: "a-1", symbol: "ACME" }, { eventId: "evt-1", headers: { traceparent } })
      yield* bus.publish(AssetCreatedEvent, { assetId: "a-1", symbol: "ACME" }, { eventId: "evt-1" })
    }))
  )
  assert.deepEqual(summary(lines), ["Debug published", "Debug published"])
  const body = lines[0]!.annotations["messaging.message.body.size"]
  assert.ok(typeof body === "number" && body > 0)
  assert.deepEqual(lines[0]!.annotations, {
    "messaging.operation.type": "send",
    "messaging.destination.name": "cqc.events.v1.asset_created",
    "messaging.message.id": "evt-1",
    "messaging.message.body.size": body,
    "cqbus.key": "a-1",
    "cqbus.header.traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "cqbus.duration_ms": 0,
    "cqbus.stream": "memory",
    "cqbus.sequence": 1,
    "cqbus.duplicate": false
  })
  assert.equal(lines[1]!.annotations["cqbus.duplicate"], true, "the second publish of evt-1 is a duplicate")
  assert.equal(lines[1]!.annotations["cqbus.sequence"], 1)
})

test("publish failure: \"publish failed\" at Warn with the PublishError reason and retriable flag", async () => {
  const { lines, provide } = captured()
  const error = await runScoped(
    EventBus.layerMemory({ memory: { maxMessageSize: 10 }, publishMiddleware: [loggingPublish()] }),
    provide(Effect.gen(function*() {
      const bus = yield* EventBus.EventBus
      return yield* Effect.flip(bus.publish(AssetCreatedEvent, { assetId: "a-1", symbol: "A".repeat(32) }, { eventId: "big" }))
    }))
  )
  assert.equal(error._tag, "PublishError")
  assert.equal((error as PublishError).reason, "TooLarge", "the failure reaches the caller unchanged")
  assert.deepEqual(summary(lines), ["Warn publish failed"])
  const annotations = lines[0]!.annotations
  assert.equal(annotations["messaging.destination.name"], "cqc.events.v1.asset_created")
  assert.equal(annotations["messaging.message.id"], "big")
  assert.equal(annotations["error.type"], "PublishError")
  assert.equal(annotations["cqbus.error.reason"], "TooLarge")
  assert.equal(annotations["cqbus.error.retriable"], false)
  assert.match(String(annotations["error.message"]), /largest accepted is 10 bytes/)
  assert.ok(!("cqbus.sequence" in annotations) && !("cqbus.stream" in annotations))
})

test("publish levels are configurable; the body is never logged", async () => {
  const { lines, provide } = captured()
  await runScoped(
    EventBus.layerMemory({
      memory: { maxMessageSize: 40 },
      publishMiddleware: [loggingPublish({ levels: { success: "None", failure: "Error" } })]
    }),
    provide(Effect.gen(function*() {
      const bus = yield* EventBus.EventBus
      yield* bus.publish(AssetCreatedEvent, { assetId: "a-1", symbol: "ACME" })
      yield* Effect.exit(bus.publish(AssetCreatedEvent, { assetId: "a-2", symbol: "SECRET-SYMBOL".repeat(4) }))
    }))
  )
  assert.deepEqual(summary(lines), ["Error publish failed"])
  assert.ok(!JSON.stringify(lines[0]!.annotations).includes("SECRET-SYMBOL"))
})

test("cqbus.duration_ms is measured on Effect's Clock: exact under a TestClock, for deliveries and publishes", async () => {
  const { lines, provide } = captured()
  // A publish middleware inside loggingPublish that takes 40 ms of (virtual) time.
  const slow: PublishMiddleware = (next) => (message) => Effect.andThen(Effect.sleep("40 millis"), next(message))
  await runScoped(
    EventBus.layerMemory({ middleware: [logging()], publishMiddleware: [slow, loggingPublish()] }),
    provide(Effect.gen(function*() {
      const bus = yield* EventBus.EventBus
      let handled = 0
      yield* bus.subscribe(
        AssetCreatedEvent,
        () => Effect.andThen(Effect.sleep("1500 millis"), Effect.sync(() => handled++)),
        { group: "timed" }
      )
      const publishing = yield* Effect.forkChild(bus.publish(AssetCreatedEvent, { assetId: "a-1", symbol: "ACME" }))
      yield* TestClock.adjust("40 millis")
      yield* Fiber.join(publishing)
      yield* waitUntil(() => handled === 1, "the handler finishes", { step: 100 })
    }))
  )
  const durations = Object.fromEntries(
    lines.filter((l) => "cqbus.duration_ms" in l.annotations).map((l) => [l.message, l.annotations["cqbus.duration_ms"]])
  )
  assert.deepEqual(durations, { "published": 40, "delivery handled": 1500 })
})
