// Hostile header blocks against a real nats-server: a peer publishes (raw `HPUB`, since nats.js refuses to build them)
// messages whose header block has a bare CR, a bare LF, a NUL, non-ASCII or invalid UTF-8 bytes, a very long value,
// names nats.js rejects, JetStream's own `Nats-Expected-*` instructions, or no structure at all. Each one ends handled
// or dead-lettered within `maxDeliver` (never NAKed in a loop), the dead-letter record keeps the original header lines
// byte for byte, and the event id is the whole `ce-id` value. Each test owns its server.
import { Reject } from "@cqbus/core"
import { DeadLetterHeaders } from "@cqbus/nats"
import { AssetCreatedEvent } from "@cqbus/testkit/events"
import { Effect } from "effect"
import assert from "node:assert/strict"
import { test } from "node:test"
import { bus, run, server, waitFor } from "./support/nats.ts"
import { rawConnect } from "./support/raw.ts"

const ENCODER = new TextEncoder()
const bytes = (text: string): Uint8Array => ENCODER.encode(text)
const concat = (...parts: ReadonlyArray<Uint8Array>): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}
/** Does `haystack` contain `needle` as a contiguous byte sequence? */
const contains = (haystack: Uint8Array, needle: Uint8Array): boolean => {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer
    return true
  }
  return false
}

test("nats hostile: a bare CR in a header value is dead-lettered within maxDeliver, with the original header bytes, and the event id is the whole value", { timeout: 30_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { bus: b, transport } = yield* bus({ servers: nats.url, source: "hostile" })
    const raw = yield* Effect.promise(() => rawConnect(nats.url))
    yield* Effect.addFinalizer(() => Effect.sync(() => raw.close()))
    const dlq = yield* Effect.promise(() => raw.subscribe("cqbus.dlq.>"))

    const seen: Array<{ readonly id: string; readonly attempt: number }> = []
    yield* b.subscribeRaw(AssetCreatedEvent.topic, (_body, delivery) =>
      Effect.suspend(() => {
        seen.push({ id: delivery.eventId, attempt: delivery.attempt })
        return Effect.fail(new Reject({ reason: "hostile" }))
      }), { group: "cr", maxDeliver: 3 })

    const lines = bytes("ce-id: a\rb\r\nx-note: one\rtwo\r\n")
    const header = concat(bytes("NATS/1.0\r\n"), lines, bytes("\r\n"))
    const body = bytes("body")
    yield* Effect.promise(() => raw.publish(AssetCreatedEvent.topic, header, body))

    yield* waitFor(() => raw.messages(dlq).length >= 1, "the message is dead-lettered", 15_000)
    const record = raw.messages(dlq)[0]!
    assert.ok(contains(record.header, lines), "the original header lines are in the record byte for byte")
    assert.deepEqual([...record.body], [...body], "the original body")
    assert.equal(seen.length, 1, "Reject dead-letters at the first delivery")
    assert.equal(seen[0]!.id, "a\rb", "the event id is the whole ce-id value, bare CR included")

    const letters = yield* transport.deadLetters!
    assert.equal(letters.length, 1)
    assert.equal(letters[0]!.headers["ce-id"], "a\rb")
    assert.equal(letters[0]!.headers["x-note"], "one\rtwo")
    assert.equal(letters[0]!.errorTag, "Reject")
    yield* Effect.sleep("1500 millis")
    assert.equal(seen.length, 1, "not redelivered")
    assert.equal(raw.messages(dlq).length, 1, "one record")
    void DeadLetterHeaders
  })))
