import assert from "node:assert/strict"
import { test } from "node:test"
import { create } from "@bufbuild/protobuf"
import { defineEvent, EventBus, InvalidTopic, MemoryTransport, PublishError, topicOf } from "@cqbus/core"
import { runScoped } from "@cqbus/testkit"
import { AssetCreatedSchema, PositionChangedSchema, PriceUpdatedSchema } from "@cqbus/testkit/events"
import { Effect } from "effect"

test("topicOf derives the topic from the proto package and the snake_case message name", () => {
  assert.equal(topicOf(AssetCreatedSchema), "cqc.events.v1.asset_created")
  assert.equal(topicOf(PriceUpdatedSchema), "cqc.events.v1.price_updated")
  assert.equal(topicOf(PositionChangedSchema), "cqc.events.v1.position_changed")
})

test("defineEvent takes the ordering key from a field name or a function", () => {
  const byField = defineEvent(PositionChangedSchema, { key: "accountId" })
  const byFunction = defineEvent(PositionChangedSchema, { key: (e) => `${e.accountId}/${e.assetId}` })
  const event = create(PositionChangedSchema, { accountId: "acc-1", assetId: "a-9" })
  assert.equal(byField.key?.(event), "acc-1")
  assert.equal(byFunction.key?.(event), "acc-1/a-9")
  assert.equal(defineEvent(PositionChangedSchema).key, undefined)
  assert.equal(byField.type, "cqc.events.v1.PositionChanged")
})

test("defineEvent accepts a topic override and throws InvalidTopic for an invalid one", () => {
  assert.equal(defineEvent(PriceUpdatedSchema, { topic: "cqc.events.v1.priceupdated" }).topic, "cqc.events.v1.priceupdated")
  assert.throws(() => defineEvent(PriceUpdatedSchema, { topic: "cqc.events.*" }), (error: unknown) =>
    error instanceof InvalidTopic && error.problem === "Wildcard")
})

test("publish fails with a typed Encode error when the message cannot be encoded", () =>
  runScoped(EventBus.layerMemory(), Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const event = defineEvent(AssetCreatedSchema)
    const error = yield* Effect.flip(bus.publish(event, { assetId: "a", decimals: -1 }))
    assert.ok(error instanceof PublishError)
    assert.equal(error.reason, "Encode")
    assert.equal(error.retriable, false)
    assert.match(error.message, /cannot encode cqc\.events\.v1\.AssetCreated for cqc\.events\.v1\.asset_created: .*uint32/)
  })))

test("publish puts the ordering key and the CloudEvents attributes into the headers", () =>
  runScoped(EventBus.layerMemory({ source: "pricing-service" }), Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const event = defineEvent(PriceUpdatedSchema, { key: "assetId" })
    yield* bus.publish(event, { assetId: "a-1", price: "10" }, { eventId: "id-1", headers: { "ce-id": "spoofed", "x-a": "b" } })
    const transport = yield* MemoryTransport.MemoryTransport
    const [stored] = yield* transport.messages()
    assert.deepEqual(stored!.headers, {
      "ce-specversion": "1.0",
      "ce-id": "id-1",
      "ce-source": "pricing-service",
      "ce-time": stored!.publishedAt.toISOString(),
      "ce-type": "cqc.events.v1.PriceUpdated",
      "content-type": "application/protobuf",
      "ce-partitionkey": "a-1",
      "x-a": "b"
    })
  })))

test("publish validates the topic of an EventDef built by hand", () =>
  runScoped(EventBus.layerMemory(), Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const handMade = { schema: PriceUpdatedSchema, type: PriceUpdatedSchema.typeName, topic: "cqc.events. v1", key: undefined }
    const error = yield* Effect.flip(bus.publish(handMade, { price: "1" }))
    assert.ok(error instanceof InvalidTopic)
    assert.equal(error.problem, "Whitespace")
  })))
