// Generated code on the in-memory backends: the generated `PriceUpdatedEvent` publishes and subscribes with its
// generated topic and ordering key and no topic string in the program, and the generated ControlService client and
// server (protoc-gen-cqbus output in @cqbus/testkit/control) talk over `MemoryRequestReply.layer()` with typed
// requests, responses and headers. The request-reply semantics on memory (error answers, NoResponders, timeouts,
// queue groups) are pinned in packages/rpc/test/.
import { type Delivery, EventBus } from "@cqbus/core"
import { MemoryRequestReply } from "@cqbus/rpc"
import { runScoped, waitUntil } from "@cqbus/testkit"
import { controlHandlers, makeControlServiceClient, serveControlService } from "@cqbus/testkit/control"
import { PriceUpdatedEvent, PriceUpdatedTopic, type PriceUpdated } from "@cqbus/testkit/events"
import { Effect, Layer } from "effect"
import assert from "node:assert/strict"
import { test } from "node:test"

const layer = Layer.mergeAll(EventBus.layerMemory({ source: "codegen-test" }), MemoryRequestReply.layer())

const handlers = (instance: string) => controlHandlers(instance, 3n)

test("codegen memory: the generated PriceUpdatedEvent publishes and subscribes on its generated topic, ordered by asset_id", () =>
  runScoped(layer, Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const seen: Array<{ readonly event: PriceUpdated; readonly delivery: Delivery }> = []
    yield* bus.subscribe(PriceUpdatedEvent, (event, delivery) => Effect.sync(() => void seen.push({ event, delivery })), {
      group: "codegen",
      ordering: "key"
    })
    const ack = yield* bus.publish(PriceUpdatedEvent, { assetId: "asset-9", symbol: "ACME", price: "10.5" })
    yield* waitUntil(() => seen.length === 1, "the event is delivered")
    assert.equal(ack.topic, "cqc.events.v1.price_updated")
    assert.equal(PriceUpdatedTopic, "cqc.events.v1.price_updated")
    assert.equal(seen[0]!.delivery.topic, PriceUpdatedTopic)
    assert.equal(seen[0]!.delivery.key, "asset-9", "the key comes from (cqbus.v1.event).key_field")
    assert.equal(seen[0]!.event.price, "10.5")
  })))

test("codegen memory: a generated client calls a generated server with typed request, response and headers", () =>
  runScoped(layer, Effect.gen(function*() {
    yield* serveControlService(handlers("worker-1"))
    const control = yield* makeControlServiceClient({ headers: { "x-operator": "ops" } })
    const status = yield* control.getStatus({ prefix: "billing-" })
    assert.equal(status.$typeName, "cqc.control.v1.GetStatusResponse")
    assert.equal(status.instance, "worker-1")
    assert.deepEqual(status.consumers.map((c) => [c.name, c.paused, c.handled]), [["billing-orders", true, 3n]])
    const paused = yield* control.pauseConsumer({ name: "orders", reason: "maintenance" })
    assert.equal(paused.changed, true)
  })))
