// The health heartbeat on NATS: its default topic works with any events stream (it has a small stream of its own),
// consumers of `cqc.events.v1.>` never see probes, bus-wide middleware (logging, metrics) never sees them, and its
// consumer is no backlog entry. A topic outside every stream fails naming the option to set.
import { EventBus, type Middleware, Transport } from "@cqbus/core"
import { Heartbeat } from "@cqbus/health"
import { NatsEventBus } from "@cqbus/nats"
import { Context, Effect, Layer } from "effect"
import assert from "node:assert/strict"
import { test } from "node:test"
import { run, server, waitFor } from "./support/nats.ts"

test("nats heartbeat: the default topic works with a custom events stream, unseen by middleware, events consumers and backlog", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const wrapped: Array<string> = []
    const counting: Middleware = (handler) => (event, delivery) =>
      Effect.sync(() => wrapped.push(delivery.topic)).pipe(Effect.andThen(handler(event, delivery)))
    const context = yield* Layer.build(Heartbeat.layer().pipe(Layer.provideMerge(NatsEventBus.layer({
      servers: nats.url,
      stream: { name: "ORDERS", subjects: ["orders.v1.>"] },
      middleware: [counting]
    }))))
    const heartbeat = Context.get(context, Heartbeat.Heartbeat)
    const bus = Context.get(context, EventBus.EventBus)
    const transport = Context.get(context, Transport.Transport)
    assert.equal(heartbeat.topic, "cqbus.health.v1.probe")
    const seen: Array<string> = []
    yield* bus.subscribeRaw("orders.v1.>", (_, d) => Effect.sync(() => seen.push(d.topic)), { group: "orders" })

    const rtt = yield* heartbeat.probe.pipe(Effect.timeout("10 seconds"))
    assert.ok(rtt >= 0)
    yield* bus.publishRaw("orders.v1.placed", new Uint8Array([1]))
    yield* waitFor(() => seen.length === 1, "the orders group got its event")
    yield* heartbeat.probe.pipe(Effect.timeout("10 seconds"))
    assert.deepEqual(seen, ["orders.v1.placed"], "no probe reached a consumer of the events stream")
    assert.deepEqual(wrapped, ["orders.v1.placed"], "the bus-wide middleware never saw a probe")
    const consumers = yield* transport.consumers!
    assert.deepEqual(consumers.map((c) => c.group), ["orders"], "the heartbeat's consumer is no backlog entry")
  })))

test("nats heartbeat: a topic outside every stream fails subscribe (naming the streams the bus knows) and publish, both naming stream.subjects", { timeout: 30_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const context = yield* Layer.build(NatsEventBus.layer({ servers: nats.url }))
    const bus = Context.get(context, EventBus.EventBus)
    const subscribe = yield* Effect.flip(bus.subscribeRaw("elsewhere.v1.thing", () => Effect.void, { group: "g" }))
    console.log(`subscribe: ${String(subscribe)}`)
    assert.equal(subscribe._tag, "SubscribeError")
    assert.match(subscribe.message, /no stream captures it; the bus knows stream CQC_EVENTS \(subjects cqc\.events\.v1\.>\)/)
    assert.match(subscribe.message, /stream\.subjects/)
    const publish = yield* Effect.flip(bus.publishRaw("elsewhere.v1.thing", new Uint8Array()))
    console.log(`publish: ${String(publish)}`)
    assert.equal(publish._tag, "PublishError")
    assert.match(publish.message, /stream\.subjects/)
  })))
