// Bus-wide middleware and publish middleware: how plugins attach to every subscription and every publish of a bus.
import assert from "node:assert/strict"
import { test } from "node:test"
import { EventBus, type Middleware, type PublishMiddleware } from "@cqbus/core"
import { runScoped, waitUntil } from "@cqbus/testkit"
import { AssetCreatedEvent } from "@cqbus/testkit/events"
import { Effect, pipe } from "effect"

const tracing = (log: Array<string>, name: string): Middleware => (handler) => (event, delivery) =>
  Effect.sync(() => log.push(`${name}>`)).pipe(
    Effect.andThen(handler(event, delivery)),
    Effect.ensuring(Effect.sync(() => log.push(`<${name}`)))
  )

test("bus middleware wraps every subscription's handler, outside the handler's own pipe, last one outermost", () => {
  const log: Array<string> = []
  return runScoped(
    EventBus.layerMemory({ middleware: [tracing(log, "bus-a"), tracing(log, "bus-b")] }),
    Effect.gen(function*() {
      const bus = yield* EventBus.EventBus
      const own = pipe((_: unknown) => Effect.sync(() => log.push("handler")), tracing(log, "own"))
      yield* bus.subscribe(AssetCreatedEvent, own, { group: "one" })
      yield* bus.publish(AssetCreatedEvent, { assetId: "a" })
      yield* waitUntil(() => log.length === 7, "the handler ran through every layer")
      assert.deepEqual(log, ["bus-b>", "bus-a>", "own>", "handler", "<own", "<bus-a", "<bus-b"])
    })
  )
})

test("publish middleware sees and can extend the outgoing message and sees the acknowledgement", () => {
  const acks: Array<number> = []
  const stamp: PublishMiddleware = (next) => (message) =>
    next({ ...message, headers: { ...message.headers, traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" } })
      .pipe(Effect.tap((ack) => Effect.sync(() => acks.push(ack.sequence))))
  return runScoped(EventBus.layerMemory({ publishMiddleware: [stamp] }), Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const seen: Array<string | undefined> = []
    yield* bus.subscribe(AssetCreatedEvent, (_, d) => Effect.sync(() => seen.push(d.headers.traceparent)), { group: "g" })
    yield* bus.publish(AssetCreatedEvent, { assetId: "a" })
    yield* bus.publishRaw("cqc.events.v1.asset_created", new Uint8Array())
    yield* waitUntil(() => seen.length === 2, "both messages arrive")
    assert.deepEqual(seen, [
      "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
      "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    ])
    assert.deepEqual(acks, [1, 2])
  }))
})
