/**
 * NATS JetStream throughput: cqbus (`NatsEventBus.layer`) against the raw nats.js client (`@nats-io/jetstream`) in the
 * same process and run, against a private `nats-server` this bench starts itself (`NatsServer.start()`: free loopback
 * port, fresh temporary file store). Both sides do the same protobuf work and send the same CloudEvents headers and
 * `Nats-Msg-Id`; each side has its own connection. See bench/README.md.
 *
 *   npm run bench:nats                                              # Node 22 (node_modules/.bin/node inside npm)
 *   node --expose-gc --conditions=@cqbus/source --import tsx bench/nats.ts   # the system Node
 *   node_modules/.bin/bun --conditions=@cqbus/source bench/nats.ts
 *   BENCH_RUNS=5 npm run bench:nats                                 # rounds (default 3)
 *   BENCH_ONLY=consume npm run bench:nats                           # only the cases whose name contains this
 *   BENCH_SIDE=cqbus BENCH_ONLY="window 256" npm run bench:nats     # one side only (profiling)
 *   BENCH_SEQ_N=20000 BENCH_PIPE_N=100000 BENCH_CONSUME_N=100000    # messages per run of each kind
 *   BENCH_CONCURRENCY=8,256                                         # subscription concurrencies of the consume cases
 *   BENCH_EPH_N=100000 BENCH_EPH_BURST=1000                         # ephemeral case: events per run, flush every K publishes
 *   BENCH_WRITES=1                                                  # also print socket writes per message (diagnostic)
 *   BENCH_NO_ASYNC_TRACES=1                                         # both connections with noAsyncTraces (diagnostic)
 *   BENCH_MARKS=marks.json                                          # timed-run windows for bench/profile/summary.mjs
 */
import { execFileSync } from "node:child_process"
import * as os from "node:os"
import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf"
import { defineEvent, type DeliverPolicy as CqbusDeliverPolicy, EventBus, type Handler, type Middleware } from "@cqbus/core"
import { logging } from "@cqbus/logging"
import { metrics } from "@cqbus/metrics"
import { recovery } from "@cqbus/recovery"
import { retry } from "@cqbus/retry"
import { NatsEventBus, NatsTransport } from "@cqbus/nats"
import { PriceUpdatedEvent, PriceUpdatedSchema } from "@cqbus/testkit/events"
import { NatsServer } from "@cqbus/testkit/nats-server"
import {
  AckPolicy,
  type ConsumerConfig,
  DeliverPolicy,
  jetstream,
  type JetStreamClient,
  type JetStreamManager,
  jetstreamManager,
  type PubAck
} from "@nats-io/jetstream"
import { headers as natsHeaders, type MsgHdrs, nanos, type NatsConnection } from "@nats-io/nats-core"
import { connect } from "@nats-io/transport-node"
import { Deferred, Effect, Exit, Logger, ManagedRuntime, Result } from "effect"
import { bodySize, messages, runtime as runtimeName } from "./fixtures.ts"

const RUNS = Number(process.env.BENCH_RUNS ?? 3)
const SEQ_N = Number(process.env.BENCH_SEQ_N ?? 20_000)
const PIPE_N = Number(process.env.BENCH_PIPE_N ?? 100_000)
const CONSUME_N = Number(process.env.BENCH_CONSUME_N ?? 100_000)
const CONCURRENCIES = (process.env.BENCH_CONCURRENCY ?? "8,256").split(",").map(Number)
const EPH_N = Number(process.env.BENCH_EPH_N ?? 100_000)
/** The ephemeral case's bursts: both sides flush their connection (a PING/PONG round trip) every K publishes. */
const EPH_BURST = Number(process.env.BENCH_EPH_BURST ?? 1000)
/** Only the cases whose name contains this. */
const ONLY = process.env.BENCH_ONLY
/** `raw` or `cqbus` to run one side only (profiling); default both. */
const SIDE = process.env.BENCH_SIDE ?? "both"

const STREAM = "CQC_EVENTS" // what NatsEventBus provisions by default for cqc.events.v1.>
const SUBJECT = PriceUpdatedEvent.topic
const SOURCE = "bench"
const TYPE = PriceUpdatedEvent.type
/**
 * The ephemeral case's topics: outside `cqc.events.v1.>`, so no stream captures them. One per side, of the same shape
 * and length, so a message still in flight at the end of one side's run cannot be counted by the other's.
 */
const EPH_TOPIC = "cqc.live.v1.price_updated"
const EPH_RAW_SUBJECT = "cqc.bare.v1.price_updated"
/** PriceUpdated on the ephemeral topic, keyed like `PriceUpdatedEvent`, so cqbus sends the headers `rawHeaders` builds. */
const PriceLiveEvent = defineEvent(PriceUpdatedSchema, { topic: EPH_TOPIC, key: "assetId" })

// ------------------------------------------------------------------------------------------------ messages

const listOf = (n: number): Array<MessageInitShape<typeof PriceUpdatedSchema>> =>
  Array.from({ length: n }, (_, i) => messages[i & 63]!)

/** Something the handlers feed, so the decoded message is used and the work cannot be optimised away. */
let sink = 0

// ------------------------------------------------------------------------------------------------ setup

const server = await NatsServer.start()
const gitState = (() => {
  try {
    return execFileSync("git", ["describe", "--always", "--dirty"], { encoding: "utf8" }).trim()
  } catch {
    return "unknown"
  }
})()
const serverVersion = (() => {
  try {
    return execFileSync("nats-server", ["--version"], { encoding: "utf8" }).trim()
  } catch {
    return "nats-server (version unknown)"
  }
})()

/**
 * BENCH_NO_ASYNC_TRACES=1: both connections with nats.js's `noAsyncTraces: true` (no `Error` created per request for
 * its stack trace), the cqbus one opened here and injected. Diagnostic: by default each side uses nats.js's defaults
 * and cqbus opens its own connection.
 */
const NO_ASYNC_TRACES = process.env.BENCH_NO_ASYNC_TRACES !== undefined

// The raw side: its own connection, as an application using nats.js directly would have.
const nc: NatsConnection = await connect({
  servers: server.url,
  name: "bench-raw",
  ...(NO_ASYNC_TRACES ? { noAsyncTraces: true } : {})
})
const js: JetStreamClient = jetstream(nc)
const jsm: JetStreamManager = await jetstreamManager(nc)

// The cqbus side: a plugin-free bus over its own connection; the layer provisions CQC_EVENTS (and CQC_DLQ).
const injected: NatsConnection | undefined = NO_ASYNC_TRACES
  ? await connect({ servers: server.url, name: "bench-cqbus", noAsyncTraces: true })
  : undefined
const runtime = ManagedRuntime.make(NatsEventBus.layer({
  servers: server.url,
  source: SOURCE,
  name: "bench-cqbus",
  ...(injected === undefined ? {} : { connection: injected })
}))
const cqbusNats = await runtime.runPromise(Effect.service(NatsTransport.NatsTransport))
const cqbusJsm: JetStreamManager = await jetstreamManager(cqbusNats.connection)

/**
 * With BENCH_WRITES=1, count the socket writes of each side's connection (nats.js flushes its outbound buffer in a
 * microtask after the first command since the last flush, so the count shows how well commands are batched).
 * Diagnostic only: it reaches into nats.js internals (`protocol.transport.send`).
 */
const writes = { raw: 0, cqbus: 0 }
if (process.env.BENCH_WRITES !== undefined) {
  for (const [side, conn] of [["raw", nc], ["cqbus", cqbusNats.connection]] as const) {
    const transport = (conn as unknown as { protocol: { transport: { send: (frame: Uint8Array) => void } } }).protocol
      .transport
    const send = transport.send.bind(transport)
    transport.send = (frame) => {
      writes[side]++
      return send(frame)
    }
  }
}

/** A fresh, empty stream with what cqbus provisions (name and subjects; the server's defaults otherwise: file store). */
const resetStream = async (): Promise<void> => {
  await jsm.streams.delete(STREAM).catch(() => false)
  await jsm.streams.add({ name: STREAM, subjects: ["cqc.events.v1.>"] })
}

/** A full GC before each timed run (when the runtime allows it), so one run's garbage is not billed to the next. */
const collect = (): void => {
  const g = globalThis as { gc?: () => void; Bun?: { gc: (force: boolean) => void } }
  if (g.Bun !== undefined) g.Bun.gc(true)
  else g.gc?.()
}

// ------------------------------------------------------------------------------------------------ raw side

/**
 * The headers cqbus sends (`Envelope.ts` `envelopeHeaders`, then `toMsgHdrs`), in the same order: CloudEvents
 * attributes in binary mode, the ordering key as `ce-partitionkey`.
 */
const rawHeaders = (id: string, key: string): MsgHdrs => {
  const h = natsHeaders()
  h.set("ce-specversion", "1.0")
  h.set("ce-id", id)
  h.set("ce-source", SOURCE)
  h.set("ce-time", new Date().toISOString())
  h.set("ce-type", TYPE)
  h.set("content-type", "application/protobuf")
  h.set("ce-partitionkey", key)
  return h
}

/** What `bus.publish(PriceUpdatedEvent, message)` does, by hand: encode, envelope, publish with the event id. */
const rawPublish = (message: MessageInitShape<typeof PriceUpdatedSchema>): Promise<PubAck> => {
  const full = create(PriceUpdatedSchema, message)
  const body = toBinary(PriceUpdatedSchema, full)
  const id = crypto.randomUUID()
  return js.publish(SUBJECT, body, { msgID: id, headers: rawHeaders(id, full.assetId) })
}

/** Timings of one run: elapsed ms, and per-message latencies in ms for sequential runs. */
interface Run {
  readonly ms: number
  readonly latencies?: Float64Array | undefined
  /** Socket writes of the side's connection during the run (BENCH_WRITES=1). */
  readonly writes?: number
  /** The process's CPU time (user + system) during the run, in ms: the client's work, nats-server is another process. */
  readonly cpuMs?: number
  /** Ephemeral case: events published but never handled (at most once: the server or the client dropped them). */
  readonly lost?: number
}

const rawSequential = async (n: number): Promise<Run> => {
  const latencies = new Float64Array(n)
  const start = performance.now()
  for (let i = 0; i < n; i++) {
    const t = performance.now()
    await rawPublish(messages[i & 63]!)
    latencies[i] = performance.now() - t
  }
  return { ms: performance.now() - start, latencies }
}

/** A sliding window: `window` workers, each publishing the next message as soon as its previous one is acked. */
const rawPipelined = async (list: ReadonlyArray<MessageInitShape<typeof PriceUpdatedSchema>>, window: number) => {
  const acks = new Array<PubAck>(list.length)
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < list.length) {
      const i = next++
      acks[i] = await rawPublish(list[i]!)
    }
  }
  await Promise.all(Array.from({ length: Math.min(window, list.length) }, worker))
  return acks
}

const rawPipelinedRun = async (n: number, window: number): Promise<Run> => {
  const list = listOf(n)
  const start = performance.now()
  const acks = await rawPipelined(list, window)
  const ms = performance.now() - start
  if (acks.length !== n || acks.some((a) => a === undefined)) throw new Error(`raw pipelined: missing acks`)
  return { ms }
}

/** The consumer cqbus creates for a group (NatsTransport.ts `consume`), so both sides pull from the same kind. */
const consumerConfig = (name: string, maxInFlight: number, from: number | undefined): Partial<ConsumerConfig> => ({
  durable_name: name,
  ack_policy: AckPolicy.Explicit,
  filter_subject: SUBJECT,
  ack_wait: nanos(30_000),
  max_deliver: -1,
  max_ack_pending: Math.max(1000, maxInFlight * 4),
  ...(from === undefined
    ? { deliver_policy: DeliverPolicy.All }
    : { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: from })
})

/** Until the server has every ack: nothing pending, nothing awaiting an ack. Asked on the side's own connection. */
const acked = async (manager: JetStreamManager, name: string): Promise<void> => {
  const deadline = Date.now() + 60_000
  while (true) {
    const info = await manager.consumers.info(STREAM, name)
    if (info.num_ack_pending === 0 && info.num_pending === 0) return
    if (Date.now() > deadline) throw new Error(`consumer ${name}: ${info.num_ack_pending} acks still pending after 60 s`)
  }
}

const within = <A>(promise: Promise<A>, what: () => string): Promise<A> => {
  let timer: ReturnType<typeof setTimeout> | undefined
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(what())), 120_000)))
  ]).finally(() => clearTimeout(timer))
}

let consumerCounter = 0

/** Raw pull consumer with a callback: decode, ack. Time from creating the consumer until the server has every ack. */
const rawConsume = async (n: number, maxMessages: number, from: number | undefined): Promise<Run> => {
  const name = `raw_${++consumerCounter}`
  let count = 0
  let done!: () => void
  const all = new Promise<void>((resolve) => (done = resolve))
  const start = performance.now()
  await jsm.consumers.add(STREAM, consumerConfig(name, maxMessages, from))
  const consumer = await js.consumers.get(STREAM, name)
  const messages = await consumer.consume({
    max_messages: maxMessages,
    callback: (m) => {
      sink += fromBinary(PriceUpdatedSchema, m.data).price.length
      m.ack()
      if (++count === n) done()
    }
  })
  await within(all, () => `raw consumer handled ${count} of ${n} within 120 s`)
  await acked(jsm, name)
  const ms = performance.now() - start
  await messages.close()
  await jsm.consumers.delete(STREAM, name)
  return { ms }
}

/**
 * The ephemeral case's count: decoded events handled, the time of the last one, and a promise that settles when all
 * `n` are in or when nothing more has come for 2 s after the publisher finished (at most once: the rest is lost).
 */
class Tally {
  count = 0
  last = 0
  private done!: () => void
  private readonly all = new Promise<void>((resolve) => (this.done = resolve))
  constructor(readonly n: number) {}
  /** One handled event (`price` read from the decoded message, so the decode cannot be optimised away). */
  hit(price: string): void {
    sink += price.length
    this.last = performance.now()
    if (++this.count === this.n) this.done()
  }
  /** Until every event is handled, or the count has stood still for 2 s. */
  settled(): Promise<void> {
    let seen = this.count
    let since = performance.now()
    let timer: ReturnType<typeof setInterval> | undefined
    const stalled = new Promise<void>((resolve) => {
      timer = setInterval(() => {
        if (this.count !== seen) {
          seen = this.count
          since = performance.now()
        } else if (performance.now() - since > 2000) resolve()
      }, 50)
    })
    return Promise.race([this.all, stalled]).finally(() => clearInterval(timer))
  }
}

/** Whether the publisher flushes its connection after publish number `i` (0-based) of `n`: every EPH_BURST, and the last. */
const flushAfter = (i: number, n: number): boolean => (i + 1) % EPH_BURST === 0 || i === n - 1

/**
 * Raw core NATS: `nc.publish` with the same encode and headers as `rawPublish` (the CloudEvents headers, then
 * `Nats-Msg-Id`, which cqbus sends on an ephemeral publish too, though nothing dedupes it), and a `nc.subscribe`
 * callback on the same connection that decodes and counts. Time from the first publish to the last handled event.
 */
const rawEphemeral = async (n: number): Promise<Run> => {
  const tally = new Tally(n)
  const sub = nc.subscribe(EPH_RAW_SUBJECT, {
    callback: (_error, m) => tally.hit(fromBinary(PriceUpdatedSchema, m.data).price)
  })
  await nc.flush() // the server has the subscription before the first publish
  const start = performance.now()
  for (let i = 0; i < n; i++) {
    const full = create(PriceUpdatedSchema, messages[i & 63]!)
    const id = crypto.randomUUID()
    const headers = rawHeaders(id, full.assetId)
    headers.set("Nats-Msg-Id", id)
    nc.publish(EPH_RAW_SUBJECT, toBinary(PriceUpdatedSchema, full), { headers })
    if (flushAfter(i, n)) await nc.flush()
  }
  await tally.settled()
  sub.unsubscribe()
  return { ms: tally.last - start, lost: n - tally.count }
}

// ------------------------------------------------------------------------------------------------ cqbus side

const cqbusSequential = (n: number): Promise<Run> =>
  runtime.runPromise(Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const latencies = new Float64Array(n)
    const start = performance.now()
    for (let i = 0; i < n; i++) {
      const t = performance.now()
      yield* bus.publish(PriceUpdatedEvent, messages[i & 63]!)
      latencies[i] = performance.now() - t
    }
    return { ms: performance.now() - start, latencies }
  }))

const cqbusPipelined = (n: number, window: number): Promise<Run> =>
  runtime.runPromise(Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const list = listOf(n)
    const start = performance.now()
    const results = yield* bus.publishAll(PriceUpdatedEvent, list, { window })
    const ms = performance.now() - start
    const failed = results.filter(Result.isFailure)
    if (results.length !== n || failed.length > 0) {
      return yield* Effect.die(new Error(`cqbus pipelined: ${failed.length} of ${n} failed: ${String(failed[0]?.failure)}`))
    }
    return { ms }
  }))

/**
 * The "full plugin stack" case's middleware, innermost first: recovery → retry → logging → metrics (each built once,
 * as an application would). Its subscriptions log to a logger that discards, so the plugin is measured, not a terminal.
 */
const pluginStack: ReadonlyArray<Middleware<unknown>> = [recovery(), retry(), logging(), metrics()]
const discardLoggers = new Set([Logger.make(() => undefined)])

/** A group subscription with a counting handler (behind `middleware`); time from subscribing until every ack is in. */
const cqbusConsume = (
  n: number,
  concurrency: number,
  from: number | undefined,
  middleware: ReadonlyArray<Middleware<unknown>> = []
): Promise<Run> => {
  const name = `cqbus_${++consumerCounter}`
  return runtime.runPromise(Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const done = yield* Deferred.make<void>()
    let count = 0
    const deliverPolicy: CqbusDeliverPolicy = from === undefined ? "all" : { fromSequence: from }
    const start = performance.now()
    const countIt = (event: { readonly price: string }) =>
      Effect.sync(() => {
        sink += event.price.length
        if (++count === n) Deferred.doneUnsafe(done, Exit.void)
      })
    const handler = middleware.reduce<Handler<{ readonly price: string }, unknown>>((inner, m) => m(inner), countIt)
    yield* bus.subscribe(PriceUpdatedEvent, handler, { group: name, concurrency, deliverPolicy }).pipe(
      Effect.provideService(Logger.CurrentLoggers, discardLoggers)
    )
    yield* Deferred.await(done).pipe(Effect.timeoutOrElse({
      duration: "120 seconds",
      orElse: () => Effect.die(new Error(`cqbus handled ${count} of ${n} within 120 s`))
    }))
    yield* Effect.promise(() => acked(cqbusJsm, name))
    return { ms: performance.now() - start }
  }).pipe(Effect.scoped)).then(async (run) => {
    await jsm.consumers.delete(STREAM, name)
    return run
  })
}

/**
 * cqbus on an ephemeral topic: `bus.topics.configure(topic, "ephemeral")` (untimed; the same each run), one
 * subscription whose handler counts the decoded events, `bus.publish` in a loop, and the bus's connection flushed every
 * EPH_BURST publishes exactly as the raw side flushes its own. Time from the first publish to the last handled event.
 */
const cqbusEphemeral = (n: number): Promise<Run> =>
  runtime.runPromise(Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    yield* bus.topics.configure(EPH_TOPIC, "ephemeral")
    const tally = new Tally(n)
    yield* bus.subscribe(PriceLiveEvent, (event) => Effect.sync(() => tally.hit(event.price)))
    const connection = cqbusNats.connection
    yield* Effect.promise(() => connection.flush())
    const start = performance.now()
    for (let i = 0; i < n; i++) {
      yield* bus.publish(PriceLiveEvent, messages[i & 63]!)
      if (flushAfter(i, n)) yield* Effect.promise(() => connection.flush())
    }
    yield* Effect.promise(() => tally.settled())
    return { ms: tally.last - start, lost: n - tally.count }
  }).pipe(Effect.scoped))

// ------------------------------------------------------------------------------------------------ cases

interface Case {
  readonly name: string
  readonly phase: "publish" | "consume" | "ephemeral"
  readonly n: number
  readonly target: number | undefined
  readonly raw?: ((n: number, warmup: boolean) => Promise<Run>) | undefined
  readonly cqbus?: ((n: number, warmup: boolean) => Promise<Run>) | undefined
}

// Consume cases read a stream pre-filled once with CONSUME_N messages; the warm-up reads only its last part.
let firstSequence = 1
const warmFrom = (n: number, warmup: boolean): number | undefined =>
  warmup ? firstSequence + CONSUME_N - n : undefined

const allCases: ReadonlyArray<Case> = [
  {
    name: "sequential publish (await each PubAck)",
    phase: "publish",
    n: SEQ_N,
    // Issue 6: the publish engine (packages/nats/src/internal/publisher.ts) at least matches raw one at a time...
    target: 1.0,
    raw: (n) => rawSequential(n),
    cqbus: (n) => cqbusSequential(n)
  },
  ...[256, 1024].map((window): Case => ({
    name: `pipelined publish, window ${window}`,
    phase: "publish",
    n: PIPE_N,
    // ...and is at least 3× raw with the same window (stretch: Go's nats.go, ≈ 164k msg/s on this machine kind).
    target: 3,
    raw: (n) => rawPipelinedRun(n, window),
    cqbus: (n) => cqbusPipelined(n, window)
  })),
  ...CONCURRENCIES.map((concurrency): Case => ({
    name: `consume+ack, concurrency ${concurrency}${concurrency === 8 ? " (default)" : ""} = max_messages`,
    phase: "consume",
    n: CONSUME_N,
    target: 0.9,
    raw: (n, warmup) => rawConsume(n, concurrency, warmFrom(n, warmup)),
    cqbus: (n, warmup) => cqbusConsume(n, concurrency, warmFrom(n, warmup))
  })),
  {
    name: "consume with the full plugin stack (recovery, retry, logging, metrics), concurrency 8",
    phase: "consume",
    n: CONSUME_N,
    target: 0.75,
    raw: (n, warmup) => rawConsume(n, 8, warmFrom(n, warmup)),
    cqbus: (n, warmup) => cqbusConsume(n, 8, warmFrom(n, warmup), pluginStack)
  },
  {
    name: "consume+ack, raw max_messages 1000 (reference)",
    phase: "consume",
    n: CONSUME_N,
    target: undefined,
    raw: (n, warmup) => rawConsume(n, 1000, warmFrom(n, warmup))
  },
  {
    name: `ephemeral publish→handle (core NATS), flush every ${EPH_BURST}`,
    phase: "ephemeral",
    n: EPH_N,
    // Issue 13: at least 0.8 of raw core-NATS pub/sub.
    target: 0.8,
    raw: (n) => rawEphemeral(n),
    cqbus: (n) => cqbusEphemeral(n)
  }
]
const cases = allCases
  .filter((c) => ONLY === undefined || c.name.includes(ONLY))
  .map((c) => ({ ...c, raw: SIDE === "cqbus" ? undefined : c.raw, cqbus: SIDE === "raw" ? undefined : c.cqbus }))
  .filter((c) => c.raw !== undefined || c.cqbus !== undefined)

// ------------------------------------------------------------------------------------------------ run

const cpus = os.cpus()
const load = () => os.loadavg().map((x) => x.toFixed(2)).join(" ")
console.log(`cqbus NATS bench — ${new Date().toISOString()}`)
console.log(`${runtimeName}, ${os.platform()} ${os.arch()}, ${cpus.length} × ${cpus[0]?.model.trim() ?? "unknown cpu"}`)
console.log(`cqbus ${gitState} (sources via @cqbus/source); ${serverVersion} on ${server.url} (fresh file store ${server.storeDir}); load average ${load()}`)
if (NO_ASYNC_TRACES) console.log("BENCH_NO_ASYNC_TRACES: both connections with noAsyncTraces: true")
console.log(`PriceUpdated, ${bodySize} bytes encoded + 7 CloudEvents headers + Nats-Msg-Id; ` +
  `N = ${SEQ_N} sequential, ${PIPE_N} pipelined, ${CONSUME_N} consumed, ${EPH_N} ephemeral; ` +
  `${RUNS} rounds after a warm-up; ` +
  `raw and cqbus alternate within each round`)
console.log("")

type Side = "raw" | "cqbus"
const results = new Map<Case, { raw: Array<Run>; cqbus: Array<Run> }>(cases.map((c) => [c, { raw: [], cqbus: [] }]))

/**
 * With BENCH_MARKS=file, the timed runs' windows in µs of the monotonic clock `--cpu-prof` stamps its samples with,
 * so a profile can be cut down to the timed runs of one side (the warm-up, the pre-fill and the setup left out).
 */
const marks: Array<{ readonly case: string; readonly side: Side; readonly start: number; readonly end: number }> = []
const micros = (): number => Number(process.hrtime.bigint() / 1000n)

const runOne = async (c: Case, side: Side, n: number, warmup: boolean): Promise<Run> => {
  if (c.phase === "publish") await resetStream()
  collect()
  const start = micros()
  const writesBefore = writes[side]
  const cpuBefore = process.cpuUsage()
  const run = await (side === "raw" ? c.raw! : c.cqbus!)(n, warmup)
  const cpu = process.cpuUsage(cpuBefore)
  if (!warmup) marks.push({ case: c.name, side, start, end: micros() })
  return { ...run, writes: writes[side] - writesBefore, cpuMs: (cpu.user + cpu.system) / 1000 }
}

for (const phase of ["publish", "consume", "ephemeral"] as const) {
  const mine = cases.filter((c) => c.phase === phase)
  if (mine.length === 0) continue
  if (phase === "consume") {
    // One stream of CONSUME_N messages, as cqbus would have published them, read by a new consumer in every run.
    await resetStream()
    const acks = await rawPipelined(listOf(CONSUME_N), 1024)
    firstSequence = acks[0]!.seq
    process.stdout.write(`(stream pre-filled with ${CONSUME_N} messages, sequences ${firstSequence}–${acks.at(-1)!.seq})\n`)
  }
  // Warm-up (JIT, protobuf's lazily compiled codecs, the server's file store).
  for (const c of mine) {
    const n = Math.max(1000, Math.floor(c.n / 5))
    if (c.raw !== undefined) await runOne(c, "raw", n, true)
    if (c.cqbus !== undefined) await runOne(c, "cqbus", n, true)
  }
  // Rounds: every case once per round, raw and cqbus back to back, their order swapped every round.
  for (let round = 0; round < RUNS; round++) {
    for (const c of mine) {
      const order: ReadonlyArray<Side> = round % 2 === 0 ? ["raw", "cqbus"] : ["cqbus", "raw"]
      for (const side of order) {
        if (c[side] === undefined) continue
        const run = await runOne(c, side, c.n, false)
        results.get(c)![side].push(run)
        const perMessage = process.env.BENCH_WRITES === undefined ? "" : `, ${(run.writes! / c.n).toFixed(3)} writes/msg`
        const lost = run.lost === undefined ? "" : `, ${run.lost} lost`
        process.stdout.write(
          `  round ${round + 1} ${side.padEnd(5)} ${c.name}: ${fmt(c.n / (run.ms / 1000))} msg/s, ` +
            `${((run.cpuMs! * 1000) / c.n).toFixed(2)} cpu µs/msg${lost}${perMessage}\n`
        )
      }
    }
  }
}

// ------------------------------------------------------------------------------------------------ report

function fmt(x: number): string {
  return Math.round(x).toLocaleString("en-US")
}
const median = (xs: ReadonlyArray<number>): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
const percentile = (xs: Float64Array, p: number): number => {
  const sorted = Float64Array.from(xs).sort()
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!
}

console.log("")
console.log(`load average ${load()}`)
const cells = (...c: ReadonlyArray<string>) =>
  c.map((cell, i) => (i === 0 ? cell.padEnd(56) : cell.padStart([11, 8, 7, 12, 8, 7, 7, 14][i - 1]!))).join(" ")
console.log(cells("case", "raw msg/s", "µs/msg", "cpu µs", "cqbus msg/s", "µs/msg", "cpu µs", "ratio", "target"))
const summary: Array<string> = []
for (const c of cases) {
  const { cqbus, raw } = results.get(c)!
  const rawMs = raw.length > 0 ? median(raw.map((r) => r.ms)) : undefined
  const cqMs = cqbus.length > 0 ? median(cqbus.map((r) => r.ms)) : undefined
  // The ratio of each round's pair (raw time / cqbus time), then the median: drift between rounds cancels out.
  const ratio = rawMs !== undefined && cqMs !== undefined
    ? median(cqbus.map((r, round) => raw[round]!.ms / r.ms))
    : undefined
  // The client's CPU per message (this process: both connections' work, not nats-server's), median over rounds.
  const cpu = (runs: ReadonlyArray<Run>) =>
    runs.length === 0 ? "-" : median(runs.map((r) => (r.cpuMs! * 1000) / c.n)).toFixed(2)
  const verdict = ratio === undefined || c.target === undefined
    ? "-"
    : `≥ ${c.target} ${ratio >= c.target ? "met" : "NOT met"}`
  console.log(cells(
    c.name,
    rawMs === undefined ? "-" : fmt(c.n / (rawMs / 1000)),
    rawMs === undefined ? "-" : ((rawMs * 1000) / c.n).toFixed(2),
    cpu(raw),
    cqMs === undefined ? "-" : fmt(c.n / (cqMs / 1000)),
    cqMs === undefined ? "-" : ((cqMs * 1000) / c.n).toFixed(2),
    cpu(cqbus),
    ratio === undefined ? "-" : ratio.toFixed(3),
    verdict
  ))
  const latency = (runs: ReadonlyArray<Run>) =>
    runs.length === 0 || runs[0]!.latencies === undefined
      ? undefined
      : `p50 ${(median(runs.map((r) => percentile(r.latencies!, 0.5))) * 1000).toFixed(0)} µs, ` +
        `p99 ${(median(runs.map((r) => percentile(r.latencies!, 0.99))) * 1000).toFixed(0)} µs`
  const rawLatency = latency(raw)
  const cqLatency = latency(cqbus)
  if (rawLatency !== undefined || cqLatency !== undefined) {
    summary.push(`${c.name} latency (median over rounds): raw ${rawLatency ?? "-"}; cqbus ${cqLatency ?? "-"}`)
  }
  const lost = (runs: ReadonlyArray<Run>) =>
    runs.length === 0 || runs[0]!.lost === undefined ? undefined : runs.map((r) => r.lost).join(", ")
  if (lost(raw) !== undefined || lost(cqbus) !== undefined) {
    summary.push(`${c.name} lost (published − handled, per round): raw ${lost(raw) ?? "-"}; cqbus ${lost(cqbus) ?? "-"}`)
  }
}
console.log("")
console.log("msg/s and µs/msg from the median run; cpu µs = the client process's CPU time (user + system) per " +
  "message, median over rounds; ratio = cqbus/raw throughput, the median over rounds of (raw time / cqbus time) " +
  "paired per round.")
for (const line of summary) console.log(line)
if (sink === 42) console.log("") // keeps `sink` alive

if (process.env.BENCH_MARKS !== undefined) {
  const { writeFileSync } = await import("node:fs")
  writeFileSync(process.env.BENCH_MARKS, JSON.stringify(marks))
}

await runtime.dispose()
await injected?.drain().catch(() => injected.close())
await nc.drain().catch(() => nc.close())
await server.cleanup()
