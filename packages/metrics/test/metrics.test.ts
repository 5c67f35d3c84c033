import assert from "node:assert/strict"
import { test } from "node:test"
import {
  Backoff,
  type ConsumerLag,
  type Delivery,
  EventBus,
  HealthError,
  MemoryTransport,
  type PublishMiddleware,
  Reject,
  Transport
} from "@cqbus/core"
import {
  consumerLag,
  layerConsumerLag,
  DURATION_BOUNDARIES,
  formatTraceparent,
  metrics,
  metricsPublish,
  parseTraceparent,
  prometheus,
  PROMETHEUS_CONTENT_TYPE,
  prometheusHandler,
  tracing,
  tracingPublish
} from "@cqbus/metrics"
import { letTimePass, testDelivery, waitUntil } from "@cqbus/testkit"
import { AssetCreatedEvent } from "@cqbus/testkit/events"
import { Effect, Fiber, Layer, ManagedRuntime, Metric, Option, type Scope, Tracer } from "effect"
import { TestClock } from "effect/testing"

const TOPIC = "cqc.events.v1.asset_created"

const delivery = (overrides: Partial<Delivery> = {}): Delivery => testDelivery({ topic: TOPIC, group: "search", ...overrides })

/** Runs an effect under a TestClock with a fresh metric registry (and, when given, a tracer). */
const run = <A, E>(
  effect: Effect.Effect<A, E, Scope.Scope>,
  { registry = new Map(), tracer }: { readonly registry?: Map<string, any>; readonly tracer?: Tracer.Tracer } = {}
): Promise<A> => {
  const scoped = Effect.scoped(effect).pipe(Effect.provideService(Metric.MetricRegistry, registry))
  const traced = tracer === undefined ? scoped : scoped.pipe(Effect.provideService(Tracer.Tracer, tracer))
  return Effect.runPromise(traced.pipe(Effect.provide(TestClock.layer())))
}

/** Runs a bus program against a memory bus layer, same environment as `run`. */
const runBus = <A, E>(
  layer: Layer.Layer<EventBus.EventBus, unknown>,
  program: Effect.Effect<A, E, EventBus.EventBus | Scope.Scope>,
  options: { readonly registry?: Map<string, any>; readonly tracer?: Tracer.Tracer } = {}
): Promise<A> => run(Effect.provide(Effect.scoped(program), layer), options)

/** The snapshots of metric `id` whose attributes include `match`. */
const series = (
  snapshots: ReadonlyArray<Metric.Metric.Snapshot>,
  id: string,
  match: Record<string, string> = {}
): Array<Metric.Metric.Snapshot> =>
  snapshots.filter((s) =>
    s.id === id && Object.entries(match).every(([key, value]) => s.attributes?.[key] === value)
  )

const counterValue = (snapshots: ReadonlyArray<Metric.Metric.Snapshot>, id: string, match: Record<string, string>) =>
  series(snapshots, id, match).reduce((sum, s) => sum + (s.type === "Counter" ? Number(s.state.count) : NaN), 0)

const histogramOf = (snapshots: ReadonlyArray<Metric.Metric.Snapshot>, id: string, match: Record<string, string>) => {
  const found = series(snapshots, id, match)
  assert.equal(found.length, 1, `one ${id} series for ${JSON.stringify(match)}`)
  const snapshot = found[0]!
  assert.equal(snapshot.type, "Histogram")
  return snapshot.state as Metric.HistogramState
}

test("metrics: a handler sleeping 250 ms under TestClock is counted as ack and lands in the 0.25 s bucket", async () => {
  const snapshots = await run(Effect.gen(function*() {
    const handler = metrics()((_: string) => Effect.sleep("250 millis"))
    const fiber = yield* Effect.forkChild(handler("x", delivery()))
    yield* TestClock.adjust("250 millis")
    yield* Fiber.join(fiber)
    return yield* Metric.snapshot
  }))
  const attributes = {
    messaging_destination_name: TOPIC,
    messaging_operation: "process",
    messaging_consumer_group_name: "search",
    outcome: "ack"
  }
  const counters = series(snapshots, "messaging_client_consumed_messages_total")
  assert.equal(counters.length, 1)
  assert.deepEqual(counters[0]!.attributes, attributes, "no error_type on success")
  assert.equal(counterValue(snapshots, "messaging_client_consumed_messages_total", attributes), 1)
  const state = histogramOf(snapshots, "messaging_process_duration_seconds", attributes)
  assert.deepEqual(state.buckets.map(([boundary]) => boundary), [...DURATION_BOUNDARIES])
  const bucket = (le: number) => state.buckets.find(([boundary]) => boundary === le)![1]
  assert.equal(bucket(0.1), 0, "not in the 0.1 s bucket")
  assert.equal(bucket(0.25), 1, "in the 0.25 s bucket")
  assert.equal(state.count, 1)
  assert.equal(state.sum, 0.25)
})

test("metrics: Reject is dead_letter, other failures and defects are retry, each with error_type", async () => {
  class Busy extends Error {
    readonly _tag = "Busy"
  }
  const snapshots = await run(Effect.gen(function*() {
    const reject = metrics()((_: string) => Effect.fail(new Reject({ reason: "bad" })))
    const busy = metrics()((_: string) => Effect.fail(new Busy("try again")))
    const died = metrics()((_: string) => Effect.die(new Error("boom")))
    const rejected = yield* Effect.flip(reject("x", delivery()))
    assert.equal(rejected._tag, "Reject", "the failure passes through unchanged")
    yield* Effect.exit(busy("x", delivery({ group: undefined })))
    yield* Effect.exit(busy("x", delivery({ group: undefined })))
    const exit = yield* Effect.exit(died("x", delivery()))
    assert.equal(exit._tag, "Failure")
    return yield* Metric.snapshot
  }))
  const id = "messaging_client_consumed_messages_total"
  assert.equal(counterValue(snapshots, id, { outcome: "dead_letter", error_type: "Reject" }), 1)
  assert.equal(counterValue(snapshots, id, { outcome: "retry", error_type: "Busy" }), 2)
  assert.equal(counterValue(snapshots, id, { outcome: "retry", error_type: "Defect" }), 1)
  assert.equal(counterValue(snapshots, id, { outcome: "ack" }), 0)
  const busy = series(snapshots, id, { error_type: "Busy" })
  assert.equal(busy.length, 1)
  assert.equal(busy[0]!.attributes?.messaging_consumer_group_name, undefined, "no group attribute without a group")
  assert.equal(histogramOf(snapshots, "messaging_process_duration_seconds", { error_type: "Busy" }).count, 2)
})

test("metrics: a failure or defect on the last allowed attempt (attempt = maxDeliver) is dead_letter, as the bus treats it", async () => {
  class Busy extends Error {
    readonly _tag = "Busy"
  }
  const snapshots = await run(Effect.gen(function*() {
    const busy = metrics()((_: string) => Effect.fail(new Busy("try again")))
    const died = metrics()((_: string) => Effect.die(new Error("boom")))
    yield* Effect.exit(busy("x", delivery({ attempt: 4, maxDeliver: 5 })))
    yield* Effect.exit(busy("x", delivery({ attempt: 5, maxDeliver: 5 })))
    yield* Effect.exit(died("x", delivery({ attempt: 3, maxDeliver: 3 })))
    return yield* Metric.snapshot
  }))
  const id = "messaging_client_consumed_messages_total"
  assert.equal(counterValue(snapshots, id, { outcome: "retry", error_type: "Busy" }), 1, "attempt 4 of 5 is retried")
  assert.equal(counterValue(snapshots, id, { outcome: "dead_letter", error_type: "Busy" }), 1, "attempt 5 of 5 is not")
  assert.equal(counterValue(snapshots, id, { outcome: "dead_letter", error_type: "Defect" }), 1)
})

test("metricsPublish: ok and error outcomes with the PublishError reason, durations on the Effect clock", async () => {
  const slow: PublishMiddleware = (next) => (message) => Effect.andThen(Effect.sleep("30 millis"), next(message))
  const snapshots = await runBus(
    EventBus.layerMemory({ memory: { maxMessageSize: 20 }, publishMiddleware: [slow, metricsPublish()] }),
    Effect.gen(function*() {
      const bus = yield* EventBus.EventBus
      const ok = yield* Effect.forkChild(bus.publish(AssetCreatedEvent, { assetId: "a-1", symbol: "A" }))
      yield* letTimePass(30)
      yield* Fiber.join(ok)
      const big = yield* Effect.forkChild(Effect.flip(
        bus.publish(AssetCreatedEvent, { assetId: "a-1", symbol: "A".repeat(64) })
      ))
      yield* letTimePass(30)
      const error = yield* Fiber.join(big)
      assert.equal(error._tag, "PublishError")
      return yield* Metric.snapshot
    })
  )
  const base = { messaging_destination_name: TOPIC, messaging_operation: "send" }
  assert.equal(counterValue(snapshots, "messaging_client_sent_messages_total", { ...base, outcome: "ok" }), 1)
  assert.equal(
    counterValue(snapshots, "messaging_client_sent_messages_total", { ...base, outcome: "error", error_type: "TooLarge" }),
    1
  )
  const ok = histogramOf(snapshots, "messaging_client_operation_duration_seconds", { outcome: "ok" })
  assert.equal(ok.count, 1)
  assert.equal(ok.sum, 0.03)
  assert.equal(ok.buckets.find(([le]) => le === 0.025)![1], 0)
  assert.equal(ok.buckets.find(([le]) => le === 0.05)![1], 1)
})

test("metrics: an interrupted handler (e.g. drained) counts as retry with error_type Interrupted", async () => {
  const snapshots = await run(Effect.gen(function*() {
    const handler = metrics()((_: string) => Effect.never)
    const fiber = yield* Effect.forkChild(handler("x", delivery()))
    yield* TestClock.adjust("2 seconds")
    yield* Fiber.interrupt(fiber)
    return yield* Metric.snapshot
  }))
  assert.equal(
    counterValue(snapshots, "messaging_client_consumed_messages_total", { outcome: "retry", error_type: "Interrupted" }),
    1
  )
  assert.equal(histogramOf(snapshots, "messaging_process_duration_seconds", { error_type: "Interrupted" }).sum, 2)
})

test("metricsPublish: a transport defect counts as error with error_type Defect", async () => {
  const dying: PublishMiddleware = () => () => Effect.die(new Error("socket gone"))
  const snapshots = await runBus(
    EventBus.layerMemory({ publishMiddleware: [dying, metricsPublish()] }),
    Effect.gen(function*() {
      const bus = yield* EventBus.EventBus
      const exit = yield* Effect.exit(bus.publish(AssetCreatedEvent, { assetId: "a-1", symbol: "A" }))
      assert.equal(exit._tag, "Failure")
      return yield* Metric.snapshot
    })
  )
  assert.equal(
    counterValue(snapshots, "messaging_client_sent_messages_total", { outcome: "error", error_type: "Defect" }),
    1
  )
})

test("metrics: extra attributes are added to every series", async () => {
  const snapshots = await run(Effect.gen(function*() {
    yield* metrics({ attributes: { service: "search" } })((_: string) => Effect.void)("x", delivery())
    return yield* Metric.snapshot
  }))
  assert.equal(counterValue(snapshots, "messaging_client_consumed_messages_total", { service: "search", outcome: "ack" }), 1)
})

// ---------------------------------------------------------------------------------------------------------------------
// Tracing
// ---------------------------------------------------------------------------------------------------------------------

/** A tracer that records every span it starts (the native tracer does the work). */
const recordingTracer = () => {
  const spans: Array<Tracer.Span> = []
  const tracer = Tracer.make({
    span(options) {
      const span = Tracer.nativeTracer.span(options)
      spans.push(span)
      return span
    }
  })
  return { spans, tracer }
}

test("tracing: the process span's parent is the send span, across a memory bus, via the traceparent header", async () => {
  const { spans, tracer } = recordingTracer()
  const seen: Array<Record<string, string>> = []
  await runBus(
    EventBus.layerMemory({ middleware: [tracing()], publishMiddleware: [tracingPublish()] }),
    Effect.gen(function*() {
      const bus = yield* EventBus.EventBus
      yield* bus.subscribe(AssetCreatedEvent, (_, d) => Effect.sync(() => seen.push({ ...d.headers })), {
        group: "search"
      })
      yield* bus.publish(AssetCreatedEvent, { assetId: "a-1", symbol: "ACME" }, {
        eventId: "evt-1",
        headers: { tracestate: "vendor=abc" }
      })
      yield* waitUntil(() => seen.length === 1, "the event is handled")
    }),
    { tracer }
  )
  const send = spans.find((s) => s.name === `send ${TOPIC}`)
  const process = spans.find((s) => s.name === `process ${TOPIC}`)
  assert.ok(send, "a send span")
  assert.ok(process, "a process span")
  assert.equal(send.kind, "producer")
  assert.equal(process.kind, "consumer")
  assert.deepEqual(Object.fromEntries(send.attributes), {
    "messaging.system": "cqbus",
    "messaging.destination.name": TOPIC,
    "messaging.message.id": "evt-1"
  })
  assert.deepEqual(Object.fromEntries(process.attributes), {
    "messaging.system": "cqbus",
    "messaging.destination.name": TOPIC,
    "messaging.message.id": "evt-1",
    "messaging.consumer.group.name": "search"
  })
  const parent = Option.getOrThrow(process.parent)
  assert.equal(parent._tag, "ExternalSpan", "the parent is the remote span from the header")
  assert.equal(parent.spanId, send.spanId)
  assert.equal(parent.traceId, send.traceId)
  assert.equal(process.traceId, send.traceId, "one trace from publisher to consumer")
  assert.equal(seen[0]!.traceparent, `00-${send.traceId}-${send.spanId}-01`)
  assert.equal(seen[0]!.tracestate, "vendor=abc", "an existing tracestate is kept")
  assert.equal(send.status._tag, "Ended")
  assert.equal(process.status._tag, "Ended")
})

test("tracing: a malformed traceparent is ignored (the process span gets no remote parent)", async () => {
  const { spans, tracer } = recordingTracer()
  const handler = tracing()((_: string) => Effect.void)
  await run(handler("x", delivery({ headers: { traceparent: "00-not-a-trace-01" } })), { tracer })
  assert.equal(spans.length, 1)
  assert.equal(spans[0]!.name, `process ${TOPIC}`)
  assert.ok(Option.isNone(spans[0]!.parent))
})

test("parseTraceparent / formatTraceparent: W3C shape, invalid values rejected", () => {
  const valid = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
  const span = parseTraceparent(valid)
  assert.ok(span)
  assert.equal(span.traceId, "0af7651916cd43dd8448eb211c80319c")
  assert.equal(span.spanId, "b7ad6b7169203331")
  assert.equal(span.sampled, true)
  assert.equal(formatTraceparent(span), valid)
  assert.equal(parseTraceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00")?.sampled, false)
  assert.ok(parseTraceparent("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-future"), "future versions may extend")
  for (
    const bad of [
      undefined,
      "",
      "garbage",
      "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01", // upper case
      "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", // version ff
      "00-00000000000000000000000000000000-b7ad6b7169203331-01", // zero trace id
      "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01", // zero span id
      "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra", // trailing data on version 00
      "00-0af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01" // short trace id
    ]
  ) {
    assert.equal(parseTraceparent(bad), undefined, String(bad))
  }
})

// ---------------------------------------------------------------------------------------------------------------------
// Prometheus exposition
// ---------------------------------------------------------------------------------------------------------------------

interface Sample {
  readonly name: string
  readonly labels: Record<string, string>
  readonly value: number
}

interface Family {
  readonly name: string
  readonly type: string
  readonly help: string
  readonly samples: Array<Sample>
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/
const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/
const LABEL = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)/

const parseValue = (text: string): number => {
  if (text === "+Inf") return Infinity
  if (text === "-Inf") return -Infinity
  if (text === "NaN") return NaN
  assert.match(text, /^-?\d+(\.\d+)?(e[+-]?\d+)?$/i, `a number: ${text}`)
  return Number(text)
}

const parseLabels = (text: string | undefined): Record<string, string> => {
  const labels: Record<string, string> = {}
  let rest = text ?? ""
  while (rest.length > 0) {
    const match = LABEL.exec(rest)
    assert.ok(match, `a label pair at ${JSON.stringify(rest)}`)
    const [whole, name, escaped] = match
    assert.ok(LABEL_NAME.test(name!))
    assert.equal(labels[name!], undefined, `label ${name} once`)
    labels[name!] = escaped!.replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c))
    rest = rest.slice(whole.length)
  }
  return labels
}

/** A strict parser for the exposition text: every line is HELP, TYPE or a sample of the family declared before it. */
const parseExposition = (text: string): Map<string, Family> => {
  assert.ok(text.endsWith("\n"), "the text ends with a newline")
  const families = new Map<string, Family>()
  let current: Family | undefined
  let help: string | undefined
  for (const line of text.slice(0, -1).split("\n")) {
    if (line.startsWith("# HELP ")) {
      const rest = line.slice("# HELP ".length)
      const space = rest.indexOf(" ")
      assert.ok(space > 0, line)
      assert.ok(METRIC_NAME.test(rest.slice(0, space)), line)
      help = rest.slice(space + 1)
      continue
    }
    if (line.startsWith("# TYPE ")) {
      const [name, type] = line.slice("# TYPE ".length).split(" ")
      assert.ok(METRIC_NAME.test(name!), line)
      assert.ok(["counter", "gauge", "histogram", "summary", "untyped"].includes(type!), line)
      assert.ok(!families.has(name!), `one TYPE line for ${name}`)
      current = { name: name!, type: type!, help: help ?? "", samples: [] }
      families.set(name!, current)
      help = undefined
      continue
    }
    assert.ok(!line.startsWith("#"), `no other comments: ${line}`)
    const match = SAMPLE.exec(line)
    assert.ok(match, `a sample line: ${line}`)
    const [, name, labels, value] = match
    assert.ok(current, `a TYPE before ${line}`)
    const suffixes = current.type === "histogram"
      ? ["_bucket", "_sum", "_count"]
      : current.type === "summary"
      ? ["", "_sum", "_count"]
      : [""]
    assert.ok(suffixes.some((suffix) => name === current!.name + suffix), `${name} belongs to ${current.name}`)
    current.samples.push({ name: name!, labels: parseLabels(labels), value: parseValue(value!) })
  }
  for (const family of families.values()) {
    if (family.type === "counter") assert.ok(family.name.endsWith("_total"), `${family.name} ends in _total`)
    if (family.type !== "histogram") continue
    // Group the series by their labels without `le`, and check each one's buckets.
    const key = (labels: Record<string, string>) =>
      JSON.stringify(Object.entries(labels).filter(([k]) => k !== "le").sort())
    const keys = new Set(family.samples.map((s) => key(s.labels)))
    for (const k of keys) {
      const samples = family.samples.filter((s) => key(s.labels) === k)
      const buckets = samples.filter((s) => s.name === `${family.name}_bucket`)
      assert.ok(buckets.length > 0, "buckets")
      const les = buckets.map((b) => parseValue(b.labels.le!))
      for (let i = 1; i < buckets.length; i++) {
        assert.ok(les[i]! > les[i - 1]!, "bucket bounds increase")
        assert.ok(buckets[i]!.value >= buckets[i - 1]!.value, "cumulative bucket counts never decrease")
      }
      assert.equal(buckets.at(-1)!.labels.le, "+Inf", "the last bucket is +Inf")
      const count = samples.filter((s) => s.name === `${family.name}_count`)
      const sum = samples.filter((s) => s.name === `${family.name}_sum`)
      assert.equal(count.length, 1)
      assert.equal(sum.length, 1)
      assert.equal(buckets.at(-1)!.value, count[0]!.value, "+Inf equals _count")
    }
  }
  return families
}

const total = (family: Family | undefined, match: Record<string, string>, name = family?.name): number =>
  (family?.samples ?? [])
    .filter((s) => s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === v))
    .reduce((sum, s) => sum + s.value, 0)

test("prometheus: the exposition of a memory bus run parses strictly and counts what was published and consumed", async () => {
  let handled = 0
  const text = await runBus(
    EventBus.layerMemory({
      memory: { maxMessageSize: 40 },
      middleware: [metrics()],
      publishMiddleware: [metricsPublish()]
    }),
    Effect.gen(function*() {
      const bus = yield* EventBus.EventBus
      yield* bus.subscribe(
        AssetCreatedEvent,
        (event) =>
          event.symbol === "BAD"
            ? Effect.fail(new Reject({ reason: "bad symbol" }))
            : Effect.andThen(Effect.sleep("250 millis"), Effect.sync(() => handled++)),
        { group: "search" }
      )
      for (let i = 0; i < 5; i++) {
        yield* bus.publish(AssetCreatedEvent, { assetId: `a-${i}`, symbol: "ACME" })
      }
      yield* bus.publish(AssetCreatedEvent, { assetId: "a-9", symbol: "BAD" })
      yield* Effect.exit(bus.publish(AssetCreatedEvent, { assetId: "a-10", symbol: "X".repeat(64) }))
      yield* waitUntil(() => handled === 5, "five events are handled")
      yield* letTimePass(50)
      return yield* prometheus()
    })
  )
  const families = parseExposition(text)
  const sent = families.get("messaging_client_sent_messages_total")
  const consumed = families.get("messaging_client_consumed_messages_total")
  const process = families.get("messaging_process_duration_seconds")
  const operation = families.get("messaging_client_operation_duration_seconds")
  assert.equal(sent?.type, "counter")
  assert.equal(consumed?.type, "counter")
  assert.equal(process?.type, "histogram")
  assert.equal(operation?.type, "histogram")
  assert.ok(consumed!.help.length > 0, "HELP text")
  assert.match(text, /^# HELP messaging_client_consumed_messages_total \S/m)
  assert.equal(total(sent, { outcome: "ok", messaging_destination_name: TOPIC, messaging_operation: "send" }), 6)
  assert.equal(total(sent, { outcome: "error", error_type: "TooLarge" }), 1)
  assert.equal(total(consumed, { outcome: "ack", messaging_consumer_group_name: "search" }), 5)
  assert.equal(total(consumed, { outcome: "dead_letter", error_type: "Reject" }), 1)
  assert.equal(total(consumed, {}), 6, "every published event was consumed exactly once")
  assert.equal(total(process, { outcome: "ack" }, "messaging_process_duration_seconds_count"), 5)
  assert.equal(total(process, { outcome: "ack", le: "0.1" }, "messaging_process_duration_seconds_bucket"), 0)
  assert.equal(total(process, { outcome: "ack", le: "0.25" }, "messaging_process_duration_seconds_bucket"), 5)
  assert.equal(total(process, { outcome: "ack" }, "messaging_process_duration_seconds_sum"), 1.25)
  assert.equal(total(operation, { outcome: "ok" }, "messaging_client_operation_duration_seconds_count"), 6)
})

test("prometheus: label values are escaped, names sanitized, counters get _total, gauges and empty registries work", async () => {
  const text = await run(Effect.gen(function*() {
    yield* Metric.update(
      Metric.withAttributes(Metric.counter("odd.name-here", { description: "a \\ back\nslash" }), {
        "bad-label": "a \"quoted\" \\ value\nwith newline"
      }),
      2
    )
    yield* Metric.update(Metric.gauge("queue_depth"), 7)
    return yield* prometheus()
  }))
  const families = parseExposition(text)
  const counter = families.get("odd_name_here_total")
  assert.equal(counter?.type, "counter")
  assert.deepEqual(counter.samples, [{
    name: "odd_name_here_total",
    labels: { bad_label: "a \"quoted\" \\ value\nwith newline" },
    value: 2
  }])
  assert.ok(text.includes(`bad_label="a \\"quoted\\" \\\\ value\\nwith newline"`))
  assert.ok(text.includes("# HELP odd_name_here_total a \\\\ back\\nslash\n"))
  assert.equal(families.get("queue_depth")?.type, "gauge")
  assert.equal(total(families.get("queue_depth"), {}), 7)
  assert.equal(await run(prometheus()), "", "an empty registry renders nothing")
  const only = await run(Effect.andThen(Metric.update(Metric.gauge("a"), 1), prometheus({ include: (id) => id !== "a" })))
  assert.equal(only, "")
})

// ---------------------------------------------------------------------------------------------------------------------
// Consumer lag gauges and the scrape handler
// ---------------------------------------------------------------------------------------------------------------------

const PENDING = "messaging_consumer_pending_messages"
const ACK_PENDING = "messaging_consumer_ack_pending_messages"
const REDELIVERED = "messaging_consumer_redelivered_messages"

const sameAttributes = (a: Readonly<Record<string, string>> | undefined, b: Record<string, string>) =>
  JSON.stringify(Object.entries(a ?? {}).sort()) === JSON.stringify(Object.entries(b).sort())

const gaugeValue = (snapshots: ReadonlyArray<Metric.Metric.Snapshot>, id: string, attributes: Record<string, string>) => {
  const found = snapshots.filter((s) => s.id === id && sameAttributes(s.attributes, attributes))
  assert.equal(found.length, 1, `one ${id} series with exactly ${JSON.stringify(attributes)}`)
  assert.equal(found[0]!.type, "Gauge")
  return (found[0]!.state as Metric.GaugeState<number>).value
}

test("consumerLag: pending / ack-pending / redelivered gauges per topic and group, ephemeral consumers summed, 0 once gone", async () => {
  const { after, before } = await run(Effect.provide(Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const transport = yield* Transport.Transport
    const lag = consumerLag({ attributes: { service: "search" } })
    for (let i = 0; i < 6; i++) yield* bus.publish(AssetCreatedEvent, { assetId: `a-${i}` })
    const before = yield* Effect.scoped(Effect.gen(function*() {
      // The group: sequence 1 fails once and waits an hour for its redelivery; 2 and 3 hang; the rest is pending.
      yield* bus.subscribe(AssetCreatedEvent, (_, d) => d.sequence === 1 ? Effect.fail("again") : Effect.never, {
        group: "search",
        concurrency: 2,
        drainTimeout: 0,
        backoff: Backoff.constant("1 hour")
      })
      // Two ephemeral consumers: each has b-1 in flight and b-2 pending.
      for (let i = 0; i < 2; i++) yield* bus.subscribe(AssetCreatedEvent, () => Effect.never, { concurrency: 1, drainTimeout: 0 })
      yield* bus.publish(AssetCreatedEvent, { assetId: "b-1" })
      yield* bus.publish(AssetCreatedEvent, { assetId: "b-2" })
      yield* letTimePass(50)
      assert.equal((yield* transport.consumers!).length, 3)
      yield* lag
      return yield* Metric.snapshot
    }))
    yield* lag
    return { before, after: yield* Metric.snapshot }
  }), EventBus.layerMemory()))
  const group = { service: "search", messaging_destination_name: TOPIC, messaging_consumer_group_name: "search" }
  const ephemeral = { service: "search", messaging_destination_name: TOPIC }
  assert.deepEqual([PENDING, ACK_PENDING, REDELIVERED].map((id) => gaugeValue(before, id, group)), [5, 2, 1])
  assert.deepEqual([PENDING, ACK_PENDING, REDELIVERED].map((id) => gaugeValue(before, id, ephemeral)), [2, 2, 0])
  for (const attributes of [group, ephemeral]) {
    assert.deepEqual([PENDING, ACK_PENDING, REDELIVERED].map((id) => gaugeValue(after, id, attributes)), [0, 0, 0],
      "the consumers are gone: their series drop to 0")
  }
})

/** The memory transport with its `consumers` replaced: the lag is whatever `read` says. */
const lagLayer = (read: Effect.Effect<ReadonlyArray<ConsumerLag>, HealthError>) =>
  Layer.effect(Transport.Transport, Effect.map(Effect.service(Transport.Transport), (memory) => ({ ...memory, consumers: read }))).pipe(
    Layer.provide(MemoryTransport.layer())
  )

test("prometheusHandler: reads the lag through the runtime on each scrape and answers the exposition; a failed read keeps the last values", async () => {
  let pending = 7
  let broken = false
  const read = Effect.suspend(() =>
    broken
      ? Effect.fail(new HealthError({ component: "consumers", message: "broker away" }))
      : Effect.succeed([{ topic: TOPIC, group: "search", consumer: "search", pending, ackPending: 1, redelivered: 0, draining: false }])
  )
  const runtime = ManagedRuntime.make(Layer.mergeAll(lagLayer(read), Layer.succeed(Metric.MetricRegistry, new Map())))
  try {
    const handler = prometheusHandler({ runtime })
    const scrape = async () => {
      const response = await handler(new Request("http://localhost/metrics"))
      assert.equal(response.status, 200)
      assert.equal(response.headers.get("content-type"), PROMETHEUS_CONTENT_TYPE)
      assert.equal(response.headers.get("cache-control"), "no-store")
      return parseExposition(await response.text())
    }
    const first = await scrape()
    assert.equal(first.get(PENDING)?.type, "gauge")
    assert.equal(total(first.get(PENDING), { messaging_consumer_group_name: "search", messaging_destination_name: TOPIC }), 7)
    assert.equal(total(first.get(ACK_PENDING), {}), 1)
    pending = 3
    assert.equal(total((await scrape()).get(PENDING), {}), 3, "read again on the next scrape")
    broken = true
    pending = 99
    assert.equal(total((await scrape()).get(PENDING), {}), 3, "the scrape still answers, with the last values")
    const without = await prometheusHandler({ runtime, consumerLag: false })(new Request("http://localhost/metrics"))
    assert.equal(without.status, 200)
  } finally {
    await runtime.dispose()
  }
  // After the runtime is gone (a service shutting down), a scrape is answered 503 with a reason, not a bare 500.
  const late = await prometheusHandler({ runtime })(new Request("http://localhost/metrics"))
  assert.equal(late.status, 503)
  assert.match(await late.text(), /^metrics unavailable: /)
})

test("layerConsumerLag: the layer reads the lag every interval (TestClock)", async () => {
  let reads = 0
  const read = Effect.sync(() => {
    reads++
    return [{ topic: TOPIC, group: undefined, consumer: "x", pending: reads, ackPending: 0, redelivered: 0, draining: false }]
  })
  const value = await run(Effect.gen(function*() {
    yield* Layer.build(layerConsumerLag({ interval: "10 seconds" }).pipe(Layer.provide(lagLayer(read))))
    yield* letTimePass(50)
    const first = reads
    yield* TestClock.adjust("30 seconds")
    yield* letTimePass(10)
    assert.equal(reads - first, 3, "three more reads in 30 s")
    return gaugeValue(yield* Metric.snapshot, PENDING, { messaging_destination_name: TOPIC })
  }))
  assert.equal(value, reads)
})
