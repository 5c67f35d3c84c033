// The quickstart example (examples/quickstart) does what it says: a transient failure is retried and handled at
// attempt 2, a rejected event is dead-lettered at once, and every published event is settled exactly once.
import assert from "node:assert/strict"
import { test } from "node:test"
import { EventBus } from "@cqbus/core"
import { runScoped } from "@cqbus/testkit"
import { Effect, Fiber } from "effect"
import { TestClock } from "effect/testing"
import { quickstart, type QuickstartReport, runQuickstart } from "../examples/quickstart/quickstart.ts"

// The example on virtual time: the retry's 200 ms backoff and the example's polling pass by driving the TestClock.
let virtual: Promise<{ readonly report: QuickstartReport; readonly lines: ReadonlyArray<string> }> | undefined
const runVirtual = () =>
  virtual ??= (async () => {
    const lines: Array<string> = []
    const report = await runScoped(
      EventBus.layerMemory(),
      Effect.gen(function*() {
        const fiber = yield* Effect.forkChild(quickstart((line) => lines.push(line)))
        while (fiber.pollUnsafe() === undefined) yield* TestClock.adjust("10 millis")
        return yield* Fiber.join(fiber)
      }),
      "virtual"
    )
    return { report, lines }
  })()

test("the transient failure is retried and handled at attempt 2", async () => {
  const { report } = await runVirtual()
  const retried = report.runs.filter((r) => r.result === "retry")
  assert.equal(retried.length, 1)
  const runsOfIt = report.runs.filter((r) => r.eventId === retried[0]!.eventId)
  assert.deepEqual(runsOfIt.map((r) => [r.group, r.topic, r.attempt, r.result]), [
    ["pricing", "cqc.events.v1.price_updated", 1, "retry"],
    ["pricing", "cqc.events.v1.price_updated", 2, "ok"]
  ])
})

test("the rejected event is dead-lettered at once with errorTag Reject", async () => {
  const { report } = await runVirtual()
  const rejected = report.runs.filter((r) => r.result === "reject")
  assert.equal(rejected.length, 1)
  assert.deepEqual(report.deadLetters, [{
    eventId: rejected[0]!.eventId,
    topic: "cqc.events.v1.price_updated",
    group: "pricing",
    errorTag: "Reject",
    deliveryCount: 1,
    reason: "rejected: price must be positive, got -1.00"
  }])
  const runsOfIt = report.runs.filter((r) => r.eventId === rejected[0]!.eventId)
  assert.equal(runsOfIt.length, 1, "a rejected event is not retried")
})

test("every published event is settled exactly once: handled or dead-lettered", async () => {
  const { report } = await runVirtual()
  const handled = report.runs.filter((r) => r.result === "ok").map((r) => r.eventId)
  const dead = report.deadLetters.map((d) => d.eventId)
  assert.equal(report.published, 6)
  assert.equal(report.runs.length, 7) // 6 first deliveries + 1 redelivery
  assert.equal(new Set([...handled, ...dead]).size, report.published)
  assert.equal(handled.length + dead.length, report.published)
  assert.deepEqual(
    [...new Set(report.runs.map((r) => `${r.group} ${r.topic}`))].sort(),
    [
      "catalog cqc.events.v1.asset_created",
      "portfolio cqc.events.v1.position_changed",
      "pricing cqc.events.v1.price_updated"
    ]
  )
})

test("the log ends with the dead letters and a summary line that matches the report", async () => {
  const { lines } = await runVirtual()
  assert.equal(lines.filter((l) => l.startsWith("publish ")).length, 6)
  const deadLine = lines.find((l) => l.startsWith("cqc.events.v1.price_updated"))
  assert.match(deadLine ?? "", /pricing\s+Reject\s+1\s+rejected: price must be positive/)
  assert.equal(lines.at(-1), "summary: 6 published, 5 handled (1 after a retry), 7 handler runs, 1 dead-lettered")
})

test("runQuickstart (what `npm run demo` calls) completes on the real clock with the same outcome", async () => {
  const lines: Array<string> = []
  const report = await runQuickstart((line) => lines.push(line))
  assert.equal(report.deadLetters.length, 1)
  assert.ok(report.runs.some((r) => r.result === "ok" && r.attempt === 2))
  assert.equal(lines.at(-1), "summary: 6 published, 5 handled (1 after a retry), 7 handler runs, 1 dead-lettered")
})
