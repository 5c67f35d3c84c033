// Property test (fast-check, fixed seed; a failure prints the seed and the shrunk body): any bytes delivered to a
// typed subscription end in exactly one of two ways at the first delivery, never a retry, a defect or a throw: the
// body decodes and the handler runs once (ack), or it does not and the message is dead-lettered as a `DecodeError`
// after one attempt. The transport here only hands the bus's `process` function arbitrary messages.
import assert from "node:assert/strict"
import { test } from "node:test"
import { AssetCreatedSchema } from "@cqbus/testkit/events"
import { Context, Effect, Layer } from "effect"
import fc from "fast-check"
import { defineEvent, EventBus, type Outcome, Transport } from "../src/index.ts"
import { type IncomingMessage } from "../src/backend.ts"

const AssetCreated = defineEvent(AssetCreatedSchema)

test("decode property: arbitrary bytes are handled once or dead-lettered as DecodeError at the first delivery", async () => {
  let process: ((message: IncomingMessage) => Effect.Effect<Outcome>) | undefined
  const transport = Layer.succeed(Transport.Transport, {
    name: "capture",
    publish: () => Effect.die("not used"),
    consume: (_options, p) => Effect.sync(() => void (process = p)),
    check: Effect.void
  })
  let runs = 0
  await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const context = yield* Layer.build(EventBus.layer({ logFailures: false }).pipe(Layer.provide(transport)))
    const bus = Context.get(context, EventBus.EventBus)
    yield* bus.subscribe(AssetCreated, () => Effect.sync(() => void runs++), { group: "decode", maxDeliver: 5 })
  })))
  assert.ok(process !== undefined, "the bus started a consumer")
  const body = fc.oneof(
    fc.uint8Array({ maxLength: 200 }),
    // Field tags and lengths that point past the end, wrong wire types, deep nesting: the interesting failures.
    fc.array(fc.constantFrom(0x0a, 0x12, 0xff, 0x80, 0x07, 0x0f, 0x01, 0x00), { maxLength: 40 }).map((b) => Uint8Array.from(b))
  )
  let handled = 0
  let deadLettered = 0
  await fc.assert(
    fc.asyncProperty(body, fc.boolean(), async (bytes, typed) => {
      const before = runs
      const outcome = await Effect.runPromise(process!({
        subject: AssetCreated.topic,
        body: bytes,
        headers: typed ? { "ce-type": AssetCreatedSchema.typeName } : {},
        deliveryCount: 1,
        sequence: 1,
        publishedAt: undefined
      }))
      if (outcome._tag === "Ack") {
        handled++
        assert.equal(runs, before + 1, "the handler ran once")
      } else {
        deadLettered++
        assert.equal(outcome._tag, "DeadLetter", `an undecodable body is dead-lettered, not ${outcome._tag}`)
        assert.ok(outcome._tag === "DeadLetter" && outcome.errorTag === "DecodeError" && outcome.attempts === 1)
        assert.equal(runs, before, "the handler did not run")
      }
    }),
    { seed: 11, numRuns: 500 }
  )
  assert.ok(handled > 0 && deadLettered > 0, `both classes occur (handled ${handled}, dead-lettered ${deadLettered})`)
  console.log(`decode property: ${JSON.stringify({ bodies: handled + deadLettered, handled, deadLettered })}`)
})
