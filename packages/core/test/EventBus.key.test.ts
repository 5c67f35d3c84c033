// An event defined with an ordering key whose value is empty (proto3's default for an unset string) is a typed publish
// error naming the event type and the key field, unless the event opts out with `allowEmptyKey`.
import assert from "node:assert/strict"
import { test } from "node:test"
import { runScoped } from "@cqbus/testkit"
import { AssetCreatedSchema } from "@cqbus/testkit/events"
import { Effect } from "effect"
import { defineEvent, EventBus, HeaderNames, MemoryTransport, PublishError } from "../src/index.ts"

test("publish: an empty ordering key fails MissingKey naming the type and field; allowEmptyKey publishes it without a key", () =>
  runScoped(
    EventBus.layerMemory(),
    Effect.gen(function*() {
      const bus = yield* EventBus.EventBus
      const memory = yield* MemoryTransport.MemoryTransport
      const Keyed = defineEvent(AssetCreatedSchema, { key: "assetId" })
      const error = yield* Effect.flip(bus.publish(Keyed, { symbol: "ACME" }))
      assert.ok(error instanceof PublishError)
      assert.equal(error.reason, "MissingKey")
      assert.equal(error.retriable, false)
      assert.match(error.message, /cqc\.events\.v1\.AssetCreated/)
      assert.match(error.message, /field assetId/)
      assert.match(error.message, /allowEmptyKey/)
      assert.equal((yield* memory.messages()).length, 0, "nothing was stored")

      // A key function returning "" is refused the same way.
      const ByFunction = defineEvent(AssetCreatedSchema, { key: (e) => e.assetId })
      const byFunction = yield* Effect.flip(bus.publish(ByFunction, {}))
      assert.ok(byFunction instanceof PublishError && byFunction.reason === "MissingKey")

      // Opted out: stored, without a key.
      const Lenient = defineEvent(AssetCreatedSchema, { key: "assetId", allowEmptyKey: true })
      yield* bus.publish(Lenient, { symbol: "ACME" })
      yield* bus.publish(Keyed, { assetId: "a-1" })
      const stored = yield* memory.messages()
      assert.deepEqual(stored.map((m) => m.headers[HeaderNames.partitionKey]), [undefined, "a-1"])
    })
  ))
