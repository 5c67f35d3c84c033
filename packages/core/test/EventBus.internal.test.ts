// `internal: true` marks an infrastructure subscription (the health heartbeat's): bus-wide middleware (where the
// logging and metrics plugins attach) does not wrap its handler, and the `consumers` capability does not list it; an
// internal publish (the heartbeat's probe) skips the bus-wide publish middleware the same way.
import assert from "node:assert/strict"
import { test } from "node:test"
import { runScoped, waitUntil } from "@cqbus/testkit"
import { Effect } from "effect"
import { EventBus, type Middleware, type PublishMiddleware, Transport } from "../src/index.ts"

test("an internal subscription runs without the bus-wide middleware and is left out of `consumers`", () => {
  const wrapped: Array<string> = []
  const counting: Middleware = (handler) => (event, delivery) =>
    Effect.sync(() => wrapped.push(delivery.topic)).pipe(Effect.andThen(handler(event, delivery)))
  return runScoped(
    EventBus.layerMemory({ middleware: [counting] }),
    Effect.gen(function*() {
      const bus = yield* EventBus.EventBus
      const transport = yield* Transport.Transport
      const seen: Array<string> = []
      yield* bus.subscribeRaw("cqbus.health.v1.probe", (_, d) => Effect.sync(() => seen.push(d.topic)), { internal: true })
      yield* bus.subscribeRaw("app.v1.thing", (_, d) => Effect.sync(() => seen.push(d.topic)), { group: "app" })
      yield* bus.publishRaw("cqbus.health.v1.probe", new Uint8Array())
      yield* bus.publishRaw("app.v1.thing", new Uint8Array())
      yield* waitUntil(() => seen.length === 2, "both subscriptions got their message")
      assert.deepEqual(wrapped, ["app.v1.thing"], "the middleware saw only the application's delivery")
      const consumers = yield* transport.consumers!
      assert.deepEqual(consumers.map((c) => c.topic), ["app.v1.thing"])
    })
  )
})

test("an internal publish skips the bus-wide publish middleware; an ordinary one goes through it; a non-boolean is refused", () => {
  const published: Array<string> = []
  const counting: PublishMiddleware = (next) => (message) =>
    Effect.sync(() => published.push(message.topic)).pipe(Effect.andThen(next(message)))
  return runScoped(
    EventBus.layerMemory({ publishMiddleware: [counting] }),
    Effect.gen(function*() {
      const bus = yield* EventBus.EventBus
      const seen: Array<string> = []
      yield* bus.subscribeRaw("cqbus.health.v1.probe", (_, d) => Effect.sync(() => seen.push(d.topic)), { internal: true })
      yield* bus.publishRaw("cqbus.health.v1.probe", new Uint8Array(), { internal: true })
      yield* bus.publishRaw("app.v1.thing", new Uint8Array())
      yield* waitUntil(() => seen.length === 1, "the probe is delivered")
      assert.deepEqual(published, ["app.v1.thing"], "the publish middleware saw only the application's publish")
      const refused = yield* Effect.flip(bus.publishRaw("app.v1.thing", new Uint8Array(), { internal: "yes" as never }))
      assert.equal(refused._tag, "PublishError")
      assert.match(refused.message, /internal must be true or false, got "yes"/)
    })
  )
})
