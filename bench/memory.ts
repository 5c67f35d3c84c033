/**
 * Memory transport publish→handle throughput: `EventBus` over the in-memory transport against a baseline of what any
 * in-process event bus has to do at the very least with protobuf events — encode, hand the bytes to a listener
 * (Node's `EventEmitter`), decode. Same event, same messages, same process, same run. See bench/README.md.
 *
 *   npm run bench                                        # Node (tsx)
 *   node_modules/.bin/bun --conditions=@cqbus/source bench/memory.ts
 *   node_modules/.bin/deno run -A --v8-flags=--expose-gc bench/memory.ts
 *   BENCH_N=50000 BENCH_RUNS=5 npm run bench             # size and repetitions
 *   BENCH_ONLY="concurrency 8" npm run bench             # only the variants whose name contains this
 */
import { EventEmitter } from "node:events"
import * as os from "node:os"
import { create, fromBinary, toBinary } from "@bufbuild/protobuf"
import { EventBus } from "@cqbus/core"
import { PriceUpdatedEvent, PriceUpdatedSchema } from "@cqbus/testkit/events"
import { Deferred, Effect, Exit } from "effect"
import { bodySize, messages, runtime } from "./fixtures.ts"

const N = Number(process.env.BENCH_N ?? 100_000)
const RUNS = Number(process.env.BENCH_RUNS ?? 3)
/** Only the variants whose name contains this (to profile one of them); the ratios need both baselines. */
const ONLY = process.env.BENCH_ONLY


/** Something the handlers feed, so the decoded message is used and the work cannot be optimised away. */
let sink = 0

/** Protobuf encode + decode only, no transport: the cost the goal compares the bus overhead with. */
const codecOnly = (n: number): number => {
  const start = performance.now()
  for (let i = 0; i < n; i++) {
    const bytes = toBinary(PriceUpdatedSchema, create(PriceUpdatedSchema, messages[i & 63]!))
    sink += fromBinary(PriceUpdatedSchema, bytes).price.length
  }
  return performance.now() - start
}

/** The baseline: encode → `emitter.emit` → the listener decodes and counts. */
const baseline = (n: number): number => {
  const emitter = new EventEmitter()
  let count = 0
  emitter.on("e", (bytes: Uint8Array) => {
    sink += fromBinary(PriceUpdatedSchema, bytes).price.length
    count++
  })
  const start = performance.now()
  for (let i = 0; i < n; i++) {
    emitter.emit("e", toBinary(PriceUpdatedSchema, create(PriceUpdatedSchema, messages[i & 63]!)))
  }
  const elapsed = performance.now() - start
  if (count !== n) throw new Error(`baseline handled ${count} of ${n}`)
  return elapsed
}

/** cqbus: one subscription whose handler counts; time from the first publish until the n-th event is handled. */
const cqbus = (n: number, concurrency: number, publishConcurrency: number | undefined): Promise<number> =>
  Effect.runPromise(
    Effect.gen(function*() {
      const bus = yield* EventBus.EventBus
      const done = yield* Deferred.make<void>()
      let count = 0
      yield* bus.subscribe(PriceUpdatedEvent, (event) =>
        Effect.sync(() => {
          sink += event.price.length
          if (++count === n) Deferred.doneUnsafe(done, Exit.void)
        }), { concurrency })
      const start = performance.now()
      if (publishConcurrency === undefined) {
        for (let i = 0; i < n; i++) yield* bus.publish(PriceUpdatedEvent, messages[i & 63]!)
      } else {
        yield* Effect.forEach(indices(n), (i) => bus.publish(PriceUpdatedEvent, messages[i & 63]!), {
          concurrency: publishConcurrency,
          discard: true
        })
      }
      yield* Deferred.await(done).pipe(Effect.timeoutOrElse({
        duration: "60 seconds",
        orElse: () => Effect.die(new Error(`cqbus handled ${count} of ${n} events within 60 s`))
      }))
      return performance.now() - start
    }).pipe(
      Effect.scoped,
      // Retain every message of the run: the default limit (100k per topic, discard old) could evict messages a
      // lagging subscription has not seen yet, and the run would never finish.
      Effect.provide(EventBus.layerMemory({ memory: { maxMessagesPerTopic: 10 * n, maxBytesPerTopic: 1024 * n } }))
    )
  )

const indices = (n: number): Array<number> => Array.from({ length: n }, (_, i) => i)

interface Variant {
  readonly role: "codec" | "baseline" | "cqbus"
  readonly name: string
  readonly run: (n: number) => number | Promise<number>
}
const allVariants: ReadonlyArray<Variant> = [
  { role: "codec", name: "protobuf encode+decode only (no transport)", run: codecOnly },
  { role: "baseline", name: "baseline: encode → EventEmitter → decode", run: baseline },
  { role: "cqbus", name: "cqbus: sequential publish, concurrency 1", run: (n) => cqbus(n, 1, undefined) },
  { role: "cqbus", name: "cqbus: sequential publish, concurrency 8 (default)", run: (n) => cqbus(n, 8, undefined) },
  { role: "cqbus", name: "cqbus: sequential publish, concurrency 64", run: (n) => cqbus(n, 64, undefined) },
  { role: "cqbus", name: "cqbus: forEach publish ×256, concurrency 64", run: (n) => cqbus(n, 64, 256) }
]
const variants = allVariants.filter((v) => ONLY === undefined || v.name.includes(ONLY))

const cpus = os.cpus()
console.log(`cqbus memory bench — ${new Date().toISOString()}`)
console.log(`${runtime}, ${os.platform()} ${os.arch()}, ${cpus.length} × ${cpus[0]?.model.trim() ?? "unknown cpu"}`)
console.log(`PriceUpdated, ${bodySize} bytes encoded; N = ${N} events per run; ${RUNS} rounds ` +
  `(every variant once per round) after a warm-up`)
console.log("")

// Warm-up (JIT, protobuf's lazily compiled codecs), then rounds that run every variant once, so that a noisy moment
// of the machine hits all variants alike instead of one block of runs.
/** A full GC before each timed run (when the runtime allows it), so one run's garbage is not billed to the next. */
const collect = (): void => {
  const g = globalThis as { gc?: () => void; Bun?: { gc: (force: boolean) => void } }
  if (g.Bun !== undefined) g.Bun.gc(true)
  else g.gc?.()
}

for (const variant of variants) await variant.run(Math.max(1000, Math.floor(N / 5)))
const times = new Map<Variant, Array<number>>(variants.map((v) => [v, []]))
for (let round = 0; round < RUNS; round++) {
  for (const variant of variants) {
    collect()
    times.get(variant)!.push(await variant.run(N))
  }
}
const median = (xs: ReadonlyArray<number>): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
const baseTimes = variants.find((v) => v.role === "baseline")
const results = variants.map((variant) => {
  const own = times.get(variant)!
  return {
    ...variant,
    best: N / (Math.min(...own) / 1000),
    median: N / (median(own) / 1000),
    // The ratio of each round's pair (baseline time / variant time), then the median: drift of a noisy machine
    // between rounds cancels out.
    ratio: baseTimes === undefined ? undefined : median(own.map((t, round) => times.get(baseTimes)![round]! / t))
  }
})

const fmt = (x: number) => Math.round(x).toLocaleString("en-US")
const cells = (...c: ReadonlyArray<string>) =>
  c.map((cell, i) => (i === 0 ? cell.padEnd(52) : cell.padStart([12, 13, 7, 18][i - 1]!))).join(" ")
console.log(cells("variant", "best msg/s", "median msg/s", "µs/msg", "ratio vs baseline"))
for (const r of results) {
  console.log(cells(r.name, fmt(r.best), fmt(r.median), (1e6 / r.median).toFixed(2), r.ratio?.toFixed(3) ?? "-"))
}
const codec = results.find((r) => r.role === "codec")
const base = results.find((r) => r.role === "baseline")
const buses = results.filter((r) => r.role === "cqbus")
if (base !== undefined && codec !== undefined && buses.length > 0) {
  const best = buses.reduce((a, b) => (b.ratio! > a.ratio! ? b : a))
  const baseMicros = 1e6 / base.median
  const overhead = baseMicros / best.ratio! - baseMicros
  const codecMicros = 1e6 / codec.median
  console.log("")
  console.log("µs/msg and msg/s from medians; ratio = median over rounds of (baseline time / variant time), " +
    "paired per round.")
  console.log(`protobuf codec ${codecMicros.toFixed(2)} µs/msg; the best cqbus variant ("${best.name}") adds ` +
    `${overhead.toFixed(2)} µs/msg over the baseline (${(overhead / codecMicros).toFixed(1)}× the codec)`)
  console.log(`ratio cqbus/baseline ${best.ratio!.toFixed(3)} (goal ≥ 0.5: ${best.ratio! >= 0.5 ? "met" : "NOT met"})`)
}
if (sink === 42) console.log("") // keeps `sink` alive
