// A bounded soak of the NATS backend, not part of `npm test`: `npm run soak -- --duration=2m [--seed=7]
// [--workers=8] [--max-backlog=20000]`. It starts its own nats-server, publishes and consumes for the set time through one bus, with
// handlers that fail at random (a thrown error, `RetryLater`, `Reject`, an error on every attempt), random delays and
// the server killed and restarted in the middle; then it waits for the backlog to settle and reconciles every event:
// sent = handled + dead-lettered (read back from the dead-letter stream), lost = 0, given up = 0 for a caller that
// retries exactly what is retriable, duplicates reported. Publishers pause while more than `--max-backlog` acked events
// are unsettled, so the backlog (and the time to settle) stays bounded however fast publishing is. It prints a progress line every 10 s and one `soak: {...}`
// summary line, and exits 1 on a mismatch (2 on a usage error).
import { Backoff, EventBus, Reject, RetryLater } from "@cqbus/core"
import { NatsEventBus } from "@cqbus/nats"
import { AssetCreatedEvent } from "@cqbus/testkit/events"
import { NatsServer } from "@cqbus/testkit/nats-server"
import { jetstream } from "@nats-io/jetstream"
import { connect } from "@nats-io/transport-node"
import { Context, Duration, Effect, Layer } from "effect"
import process from "node:process"
import { longestGap, publishCarefully, Tally } from "../packages/nats/test/support/load.ts"

const usage = (problem: string): never => {
  console.error(`soak: ${problem}\nusage: npm run soak -- [--duration=2m] [--seed=N] [--workers=N] [--max-backlog=N]`)
  process.exit(2)
}

const option = (name: string): string | undefined =>
  process.argv.slice(2).find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3)
for (const arg of process.argv.slice(2)) if (!/^--(duration|seed|workers|max-backlog)=/.test(arg)) usage(`unknown argument ${arg}`)
const durationText = option("duration") ?? "2m"
const durationMatch = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(durationText) ?? usage(`bad --duration ${durationText}`)
const DURATION_MS = Number(durationMatch[1]) * { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 }[durationMatch[2] ?? "s"]!
const SEED = Number(option("seed") ?? Date.now() % 100_000)
const WORKERS = Number(option("workers") ?? 8)
const MAX_BACKLOG = Number(option("max-backlog") ?? 20_000)
if (!(DURATION_MS >= 10_000)) usage("--duration must be at least 10s")
if (!Number.isInteger(WORKERS) || WORKERS < 1) usage("--workers must be a positive integer")
if (!Number.isInteger(MAX_BACKLOG) || MAX_BACKLOG < 1) usage("--max-backlog must be a positive integer")

// What a handler does with an event: decided from the event id and the seed, so every delivery of one event behaves
// the same way (a redelivery of a `flaky` event after its second attempt succeeds).
type Behaviour = "ok" | "flaky" | "later" | "reject" | "poison"
const hash = (text: string): number => {
  let h = 0x811c9dc5 ^ SEED
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193)
  return (h >>> 0) / 0x1_0000_0000
}
const behaviourOf = (eventId: string): Behaviour => {
  const r = hash(eventId)
  return r < 0.80 ? "ok" : r < 0.90 ? "flaky" : r < 0.95 ? "later" : r < 0.98 ? "reject" : "poison"
}
const MAX_DELIVER = 5

const main = Effect.gen(function*() {
  const nats = yield* Effect.acquireRelease(Effect.promise(() => NatsServer.start()), (s) => Effect.promise(() => s.cleanup()))
  const context = yield* Layer.build(NatsEventBus.layer({
    servers: nats.url,
    source: "soak",
    publishTimeout: "2 seconds",
    reconnect: { wait: "100 millis", jitter: "50 millis" },
    // Thousands of failures are the point here: the default warning line per failed delivery would drown the output.
    logFailures: false
  }))
  const bus = Context.get(context, EventBus.EventBus)
  const tally = new Tally()
  const attempts = new Map<Behaviour, number>()
  // Events whose last delivery dead-letters them (for pacing only; the reconciliation reads the dead-letter stream).
  const toDeadLetter = new Set<string>()
  let deliveries = 0
  yield* bus.subscribe(AssetCreatedEvent, (_event, delivery) =>
    Effect.gen(function*() {
      deliveries++
      const behaviour = behaviourOf(delivery.eventId)
      attempts.set(behaviour, (attempts.get(behaviour) ?? 0) + 1)
      // Random work time: mostly short, now and then long.
      const r = Math.random()
      yield* Effect.sleep(Duration.millis(r < 0.9 ? Math.floor(r * 5) : 50 + Math.floor(Math.random() * 150)))
      switch (behaviour) {
        case "flaky":
          // A handler that throws (a defect, as an unexpected exception is) on its first two attempts.
          if (delivery.attempt <= 2) {
            return yield* Effect.sync(() => {
              throw new Error(`flaky ${delivery.eventId} on attempt ${delivery.attempt}`)
            })
          }
          break
        case "later":
          if (delivery.attempt === 1) return yield* Effect.fail(new RetryLater({ delay: "300 millis", reason: "soak" }))
          break
        case "reject":
          toDeadLetter.add(delivery.eventId)
          return yield* Effect.fail(new Reject({ reason: "soak rejects it" }))
        case "poison":
          // Fails on every attempt: dead-lettered after maxDeliver.
          if (delivery.attempt >= MAX_DELIVER) toDeadLetter.add(delivery.eventId)
          return yield* Effect.fail(new Error(`poison ${delivery.eventId}`))
      }
      tally.handle(delivery.eventId)
    }), {
    group: "soak",
    concurrency: 32,
    maxDeliver: MAX_DELIVER,
    backoff: Backoff.exponential({ initial: "100 millis", max: "2 seconds" }),
    ackWait: "10 seconds"
  })

  const started = Date.now()
  const endsAt = started + DURATION_MS
  let next = 0
  const backlog = () => tally.acked.size - tally.handled.size - toDeadLetter.size
  let pausedMs = 0
  const worker = Effect.gen(function*() {
    while (Date.now() < endsAt) {
      if (backlog() > MAX_BACKLOG) {
        yield* Effect.sleep("50 millis")
        pausedMs += 50
        continue
      }
      yield* publishCarefully(bus, tally, `soak-${SEED}-${next++}`, { giveUpAt: endsAt + 60_000, retryAfter: 100 })
      yield* Effect.sleep(Duration.millis(Math.floor(Math.random() * 4)))
    }
  })
  let killedAt = 0
  let restartedAt = 0
  const restart = Effect.gen(function*() {
    yield* Effect.sleep(Duration.millis(DURATION_MS / 2))
    killedAt = Date.now()
    yield* Effect.promise(() => nats.kill())
    yield* Effect.sleep("2 seconds")
    yield* Effect.promise(() => nats.restart())
    restartedAt = Date.now()
    console.log(`soak: server killed at ${((killedAt - started) / 1000).toFixed(1)} s, back after ${restartedAt - killedAt} ms`)
  })
  const progress = Effect.gen(function*() {
    while (true) {
      yield* Effect.sleep("10 seconds")
      console.log(`soak: ${((Date.now() - started) / 1000).toFixed(0)} s ${JSON.stringify({ acked: tally.acked.size, handled: tally.handled.size, backlog: backlog(), deliveries })}`)
    }
  })
  const progressFiber = yield* Effect.forkChild(progress)
  yield* Effect.all([Effect.all(Array.from({ length: WORKERS }, () => worker), { concurrency: "unbounded" }), restart], {
    concurrency: "unbounded"
  })
  const publishEnded = Date.now()

  // Dead letters, read back from the dead-letter stream by their original event id (ce-id).
  const nc = yield* Effect.acquireRelease(Effect.promise(() => connect({ servers: nats.url })), (c) => Effect.promise(() => c.close()))
  const deadLettered = new Map<string, number>()
  const readDeadLetters = Effect.promise(async () => {
    const consumer = await jetstream(nc).consumers.get("CQC_DLQ")
    const seen = new Map<string, number>()
    const messages = await consumer.fetch({ max_messages: 100_000, expires: 2_000 })
    for await (const m of messages) {
      const id = m.headers?.get("ce-id") ?? ""
      seen.set(id, (seen.get(id) ?? 0) + 1)
      if (m.info.pending === 0) break
    }
    return seen
  })
  const refresh = Effect.map(readDeadLetters, (read) => {
    deadLettered.clear()
    for (const [id, n] of read) deadLettered.set(id, n)
  })
  const settled = () => [...tally.acked].every((id) => tally.handled.has(id) || deadLettered.has(id))
  // Let the backlog, the backoffs and the redeliveries settle: as long as it takes while the counts move, but no
  // more than 60 s without progress (then whatever is missing counts as lost).
  let lastProgress = Date.now()
  let lastCount = -1
  while (Date.now() - lastProgress < 60_000) {
    yield* refresh
    if (settled()) break
    const count = tally.handled.size + deadLettered.size
    if (count !== lastCount) {
      lastCount = count
      lastProgress = Date.now()
    }
    yield* Effect.sleep("2 seconds")
  }
  yield* Effect.sleep("2 seconds")
  yield* refresh
  progressFiber.interruptUnsafe()

  const handledIds = new Set(tally.handled.keys())
  const both = [...deadLettered.keys()].filter((id) => handledIds.has(id))
  const unknownDead = [...deadLettered.keys()].filter((id) => !tally.acked.has(id))
  const lost = [...tally.acked].filter((id) => !handledIds.has(id) && !deadLettered.has(id))
  const expectedDead = [...tally.acked].filter((id) => ["reject", "poison"].includes(behaviourOf(id)))
  const union = new Set([...handledIds, ...deadLettered.keys()])
  const summary = {
    seed: SEED,
    durationS: DURATION_MS / 1000,
    sent: tally.sent.size,
    acked: tally.acked.size,
    duplicateAcks: tally.duplicateAcks,
    givenUp: tally.givenUp.size,
    handled: handledIds.size,
    deadLettered: deadLettered.size,
    deadLetteredExpected: expectedDead.length,
    handledAndDeadLettered: both.length,
    duplicates: tally.duplicates(),
    duplicateDeadLetters: [...deadLettered.values()].reduce((n, c) => n + c - 1, 0),
    lost: lost.length,
    deliveries,
    deliveriesByBehaviour: Object.fromEntries(attempts),
    publishFailures: Object.fromEntries(tally.failures),
    restartOutageMs: restartedAt - killedAt,
    maxBacklog: MAX_BACKLOG,
    publishersPausedMs: Math.round(pausedMs / WORKERS),
    publishGapMs: longestGap(tally.ackTimes, started, publishEnded),
    consumeGapMs: longestGap(tally.handleTimes, started, publishEnded),
    settleMs: Date.now() - publishEnded
  }
  console.log(`soak: ${JSON.stringify(summary)}`)
  const problems = [
    ...(tally.givenUp.size > 0 ? [`${tally.givenUp.size} events given up, e.g. ${[...tally.givenUp].slice(0, 3).join("; ")}`] : []),
    ...(lost.length > 0 ? [`${lost.length} acked events neither handled nor dead-lettered, e.g. ${lost.slice(0, 5).join(", ")}`] : []),
    ...(union.size !== tally.sent.size ? [`sent ${tally.sent.size} != handled ∪ dead-lettered ${union.size}`] : []),
    ...(unknownDead.length > 0 ? [`${unknownDead.length} dead letters of events never acked`] : []),
    ...(both.length > 0 ? [`${both.length} events both handled and dead-lettered, e.g. ${both.slice(0, 5).join(", ")}`] : [])
  ]
  for (const problem of problems) console.error(`soak: MISMATCH ${problem}`)
  return problems.length === 0
})

Effect.runPromise(Effect.scoped(main)).then(
  (ok) => process.exit(ok ? 0 : 1),
  (error) => {
    console.error(`soak: failed: ${String(error)}`)
    process.exit(1)
  }
)
