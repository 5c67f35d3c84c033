/**
 * Failures are visible by default (DESIGN §4): without plugins the bus logs one warning per failed delivery and one
 * for a dead letter; `logging()` replaces those lines; and the bus, `logging()` and `metrics()` all follow
 * `Verdict.of`.
 */
import assert from "node:assert/strict"
import { test } from "node:test"
import {
  Backoff,
  type Delivery,
  EventBus,
  type EventBusShape,
  MemoryTransport,
  Reject,
  RetryLater,
  Transport,
  Verdict
} from "@cqbus/core"
import { logging } from "@cqbus/logging"
import { metrics } from "@cqbus/metrics"
import { captureLogs, letTimePass, runScoped, testDelivery } from "@cqbus/testkit"
import { AssetCreatedEvent } from "@cqbus/testkit/events"
import { Cause, Effect, Exit, Metric, pipe } from "effect"
import { TestClock } from "effect/testing"
import { decide } from "../packages/core/src/internal/process.ts"

const captured = captureLogs

/** Subscribes a handler that always throws, publishes one event and waits for its dead letter. */
const throwingUntilDeadLetter = (
  bus: EventBusShape,
  memory: MemoryTransport.MemoryTransportShape,
  handler: (event: unknown, delivery: Delivery) => Effect.Effect<void, unknown>
) =>
  Effect.gen(function*() {
    yield* bus.subscribe(AssetCreatedEvent, handler, {
      group: "billing",
      maxDeliver: 3,
      backoff: Backoff.constant("1 second")
    })
    yield* bus.publish(AssetCreatedEvent, { assetId: "a-1" }, { eventId: "evt-9" })
    for (let i = 0; i < 50 && (yield* memory.deadLetters).length === 0; i++) yield* letTimePass(100)
    assert.equal((yield* memory.deadLetters).length, 1, "the message is dead-lettered")
  })

test("no plugins: a throwing handler leaves one warning per failed delivery and one for its dead letter", async () => {
  const { lines, provide } = captured()
  let runs = 0
  await runScoped(
    EventBus.layerMemory(),
    provide(Effect.gen(function*() {
      const bus = yield* EventBus.EventBus
      const memory = yield* MemoryTransport.MemoryTransport
      yield* throwingUntilDeadLetter(bus, memory, () =>
        Effect.sync(() => {
          runs++
          throw new TypeError(`boom ${runs}`)
        }))
    }))
  )
  assert.equal(runs, 3)
  const warnings = lines.filter((l) => l.level === "Warn")
  assert.equal(warnings.length, 3, "one line per delivery: two failures, then the dead letter")
  assert.deepEqual(lines.filter((l) => l.level !== "Warn"), [], "nothing else is logged")
  assert.match(warnings[0]!.message, /^delivery failed on cqc\.events\.v1\.asset_created \(group billing\), event evt-9, attempt 1 of 3; it will be redelivered: Defect: boom 1$/)
  assert.match(warnings[1]!.message, /attempt 2 of 3; it will be redelivered: Defect: boom 2$/)
  assert.match(warnings[2]!.message, /^delivery dead-lettered on .*attempt 3 of 3: gave up after 3 deliveries; last error Defect: boom 3$/)
  assert.deepEqual(warnings[0]!.annotations, {
    "messaging.operation.type": "process",
    "messaging.destination.name": "cqc.events.v1.asset_created",
    "messaging.message.id": "evt-9",
    "messaging.consumer.group.name": "billing",
    "cqbus.group": "billing",
    "cqbus.attempt": 1,
    "cqbus.max_deliver": 3,
    "cqbus.outcome": "retry",
    "error.type": "TypeError",
    "error.message": "boom 1"
  })
  assert.deepEqual(warnings[2]!.annotations, {
    ...warnings[0]!.annotations,
    "cqbus.attempt": 3,
    "cqbus.outcome": "dead_letter",
    "error.message": "boom 3",
    "cqbus.dead_letter.reason": "gave up after 3 deliveries; last error Defect: boom 3"
  })
  assert.ok(Cause.hasDies(warnings[0]!.cause), "the first delivery's line carries the stack")
  assert.ok(!Cause.hasDies(warnings[1]!.cause) && !Cause.hasDies(warnings[2]!.cause), "later lines do not repeat it")
})

test("no plugins: a typed failure and a Reject are logged too, success is not, and logFailures: false silences them", async () => {
  for (const config of [{}, { logFailures: false }]) {
    const { lines, provide } = captured()
    await runScoped(
      EventBus.layerMemory(config),
      provide(Effect.gen(function*() {
        const bus = yield* EventBus.EventBus
        const memory = yield* MemoryTransport.MemoryTransport
        let failed = false
        yield* bus.subscribe(AssetCreatedEvent, (event) => {
          if (event.assetId === "ok") return Effect.void
          if (event.assetId === "flaky" && !failed) {
            failed = true
            return Effect.fail({ _tag: "Busy", message: "try later" })
          }
          return event.assetId === "bad" ? Effect.fail(new Reject({ reason: "no such asset" })) : Effect.void
        }, { group: "g", backoff: Backoff.constant("1 second") })
        yield* bus.publish(AssetCreatedEvent, { assetId: "ok" }, { eventId: "e-ok" })
        yield* bus.publish(AssetCreatedEvent, { assetId: "flaky" }, { eventId: "e-flaky" })
        yield* bus.publish(AssetCreatedEvent, { assetId: "bad" }, { eventId: "e-bad" })
        yield* letTimePass(2000)
        assert.equal((yield* memory.deadLetters).length, 1)
      }))
    )
    if ("logFailures" in config) {
      assert.deepEqual(lines, [], "logFailures: false writes no default line")
      continue
    }
    assert.deepEqual(lines.map((l) => `${l.level} ${l.annotations["messaging.message.id"]} ${l.annotations["cqbus.outcome"]}`).sort(), [
      "Warn e-bad dead_letter",
      "Warn e-flaky retry"
    ])
    const rejected = lines.find((l) => l.annotations["messaging.message.id"] === "e-bad")!
    assert.match(rejected.message, /dead-lettered .*: Reject: rejected: no such asset$/)
    assert.equal(rejected.annotations["error.type"], "Reject")
    const flaky = lines.find((l) => l.annotations["messaging.message.id"] === "e-flaky")!
    assert.equal(flaky.annotations["error.type"], "Busy")
    assert.equal(flaky.annotations["error.message"], "try later")
  }
})

test("logging() replaces the default line, whatever the middleware order, also with metrics() outside it", async () => {
  const orders = [
    (l = logging(), m = metrics()) => [l, m],
    (l = logging(), m = metrics()) => [m, l]
  ]
  for (const order of orders) {
    const { lines, provide } = captured()
    await runScoped(
      EventBus.layerMemory({ middleware: order() }),
      provide(Effect.gen(function*() {
        const bus = yield* EventBus.EventBus
        const memory = yield* MemoryTransport.MemoryTransport
        yield* throwingUntilDeadLetter(bus, memory, () => Effect.fail(new RangeError("down")))
      }))
    )
    const outcomes = lines.filter((l) => l.level !== "Debug").map((l) => `${l.level} ${l.message}`)
    assert.deepEqual(outcomes, ["Warn delivery failed", "Warn delivery failed", "Error delivery dead-lettered"])
  }
})

/** How the logging plugin's `cqbus.outcome` maps to a verdict kind. */
const KIND_OF_LINE: Record<string, Verdict.Verdict["kind"]> = {
  handled: "ack",
  failed: "retry",
  defect: "retry",
  interrupted: "retry",
  dead_letter: "dead_letter"
}

/** How the transport's `Outcome` maps to a verdict kind. */
const KIND_OF_OUTCOME: Record<string, Verdict.Verdict["kind"]> = { Ack: "ack", Nak: "retry", DeadLetter: "dead_letter" }

test("the transport, logging() and metrics() agree with Verdict.of over a table of exits and attempts", async () => {
  const exits: ReadonlyArray<readonly [string, Exit.Exit<void, unknown>]> = [
    ["success", Exit.void],
    ["typed failure", Exit.fail({ _tag: "Busy", message: "busy" })],
    ["plain Error", Exit.fail(new Error("down"))],
    ["Reject", Exit.fail(new Reject({ reason: "bad" }))],
    ["RetryLater", Exit.fail(new RetryLater({ delay: "5 seconds" }))],
    ["defect", Exit.die(new TypeError("bug"))],
    ["interruption", Exit.failCause(Cause.interrupt())]
  ]
  const attempts: ReadonlyArray<readonly [number, number]> = [[1, 5], [4, 5], [5, 5], [1, 1], [7, 5]]
  const expected: Record<string, Record<string, Verdict.Verdict["kind"]>> = {
    success: { "1/5": "ack", "4/5": "ack", "5/5": "ack", "1/1": "ack", "7/5": "ack" },
    Reject: { "1/5": "dead_letter", "4/5": "dead_letter", "5/5": "dead_letter", "1/1": "dead_letter", "7/5": "dead_letter" }
  }
  const failing: Record<string, Verdict.Verdict["kind"]> = {
    "1/5": "retry",
    "4/5": "retry",
    "5/5": "dead_letter",
    "1/1": "dead_letter",
    "7/5": "dead_letter"
  }
  for (const [name, exit] of exits) {
    for (const [attempt, maxDeliver] of attempts) {
      const at = `${attempt}/${maxDeliver}`
      const delivery = testDelivery({ attempt, maxDeliver, group: "g" })
      const verdict = Verdict.of(exit, delivery)
      assert.equal(verdict.kind, (expected[name] ?? failing)[at], `${name} at ${at}`)
      assert.equal(KIND_OF_OUTCOME[decide(exit, attempt, maxDeliver, Backoff.constant("1 second"))._tag], verdict.kind,
        `the transport's outcome for ${name} at ${at}`)

      const { lines, provide } = captured()
      const registry = new Map()
      const handler = pipe((_: string) => Effect.suspend(() => exit), metrics(), logging({ levels: { start: "None" } }))
      await Effect.runPromise(
        provide(Effect.exit(handler("x", delivery))).pipe(
          Effect.provideService(Metric.MetricRegistry, registry),
          Effect.provide(TestClock.layer())
        )
      )
      assert.equal(lines.length, 1, `one plugin line for ${name} at ${at}`)
      assert.equal(KIND_OF_LINE[String(lines[0]!.annotations["cqbus.outcome"])], verdict.kind, `logging: ${name} at ${at}`)
      const snapshots = await Effect.runPromise(Metric.snapshot.pipe(Effect.provideService(Metric.MetricRegistry, registry)))
      const counted = snapshots.filter((s) => s.id === "messaging_client_consumed_messages_total")
      assert.equal(counted.length, 1)
      assert.equal(counted[0]!.attributes?.outcome, verdict.kind, `metrics: ${name} at ${at}`)
      assert.equal(counted[0]!.attributes?.error_type, verdict.kind === "ack" ? undefined : verdict.errorTag)
    }
  }
})

test("a peer's event id with CR/LF cannot forge a log line: the default warning escapes it", async () => {
  const { lines, provide } = captured()
  await runScoped(
    EventBus.layerMemory(),
    provide(Effect.gen(function*() {
      const bus = yield* EventBus.EventBus
      const memory = yield* MemoryTransport.MemoryTransport
      yield* bus.subscribe(AssetCreatedEvent, () => Effect.fail("nope"), { group: "audit", maxDeliver: 1 })
      // A peer writes the transport directly (as any NATS client may): its `ce-id` holds a line break.
      yield* (yield* Transport.Transport).publish({
        topic: AssetCreatedEvent.topic,
        body: new Uint8Array(0),
        headers: { "ce-id": "evt-1\r\nlevel=ERROR msg=forged" },
        eventId: "evt-1",
        dedupe: true,
        key: undefined
      })
      for (let i = 0; i < 50 && (yield* memory.deadLetters).length === 0; i++) yield* letTimePass(100)
    }))
  )
  const warnings = lines.filter((l) => l.level === "Warn")
  assert.equal(warnings.length, 1)
  assert.ok(!/[\r\n]/.test(warnings[0]!.message), `one line: ${JSON.stringify(warnings[0]!.message)}`)
  assert.match(warnings[0]!.message, /event evt-1\\r\\nlevel=ERROR msg=forged, attempt 1 of 1/)
})
