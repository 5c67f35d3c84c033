// Hostile header blocks against a real nats-server: a peer publishes (raw `HPUB`, since nats.js refuses to build them)
// messages whose header block has a bare CR, a bare LF, a NUL, non-ASCII or invalid UTF-8 bytes, a very long value,
// names nats.js rejects, JetStream's own `Nats-Expected-*` instructions, or no structure at all. Each one ends handled
// or dead-lettered within `maxDeliver` (never NAKed in a loop), the dead-letter record keeps the original header lines
// byte for byte, and the event id is the whole `ce-id` value. Each test owns its server.
import { Reject, RetryLater } from "@cqbus/core"
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
  })))

/** One class of hostile message: its header block, its body, and the header lines its dead letter must keep. */
interface Hostile {
  readonly name: string
  readonly header: Uint8Array
  readonly body?: Uint8Array
  /** Lines (without CRLF) the record must contain byte for byte; default: every line after the status line. */
  readonly kept?: ReadonlyArray<Uint8Array>
  /** Text the record must not contain (JetStream instructions, not copied). */
  readonly dropped?: ReadonlyArray<string>
  /** The record is stored without the original's bytes (over max_payload with them). */
  readonly omitted?: boolean
}

const MAX_PAYLOAD = 64 * 1024
const block = (...lines: ReadonlyArray<string | Uint8Array>): Uint8Array =>
  concat(bytes("NATS/1.0\r\n"), ...lines.map((l) => concat(typeof l === "string" ? bytes(l) : l, bytes("\r\n"))), bytes("\r\n"))
const linesOf = (header: Uint8Array): ReadonlyArray<Uint8Array> => {
  const out: Array<Uint8Array> = []
  let at = 0
  for (let i = 0; i + 1 < header.length; i++) {
    if (header[i] === 13 && header[i + 1] === 10) {
      if (i > at) out.push(header.subarray(at, i))
      at = i + 2
      i++
    }
  }
  if (at < header.length) out.push(header.subarray(at))
  return out
}

test("nats hostile: every class of hostile header block or body ends dead-lettered within maxDeliver, its header lines kept byte for byte", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server({ maxPayload: MAX_PAYLOAD })
    const { bus: b, nats: info } = yield* bus({ servers: nats.url, source: "hostile" })
    const raw = yield* Effect.promise(() => rawConnect(nats.url))
    yield* Effect.addFinalizer(() => Effect.sync(() => raw.close()))
    const dlq = yield* Effect.promise(() => raw.subscribe("cqbus.dlq.>"))

    const cases: ReadonlyArray<Hostile> = [
      { name: "bare CR", header: block("ce-id: h-cr\rtail", "x-a: 1\r2") },
      { name: "bare LF", header: block("ce-id: h-lf\ntail", "x-a: 1\n2") },
      { name: "NUL", header: block("ce-id: h-nul", "x-nul: a\u0000b") },
      { name: "non-ASCII", header: block("ce-id: h-ü", "x-text: prix négatif — €") },
      { name: "invalid UTF-8", header: block("ce-id: h-utf8", concat(bytes("x-bin: "), Uint8Array.of(0xff, 0xfe, 0xc3, 0x28))) },
      { name: "long value (32 KiB)", header: block("ce-id: h-long", `x-long: ${"v".repeat(32 * 1024)}`) },
      {
        name: "near max_payload (record too large with it)",
        header: block("ce-id: h-huge", `x-huge: ${"w".repeat(MAX_PAYLOAD - 200)}`),
        omitted: true
      },
      { name: "names nats.js rejects", header: block("ce-id: h-names", "bad name: 1", "nämé: 2", "x:y:z: 3") },
      { name: "no colon, empty value, repeated name", header: block("ce-id: h-shape", "a line without a colon", "x-empty:", "ce-id: second") },
      {
        name: "JetStream instructions",
        header: block("ce-id: h-js", `Nats-Expected-Stream: ${info.stream}`, "nats-msg-id: lower-case-id"),
        kept: [bytes("ce-id: h-js")],
        dropped: ["Nats-Expected-Stream", "lower-case-id"]
      },
      { name: "status line with a code", header: bytes("NATS/1.0 503 Fake\r\nce-id: h-status\r\n\r\n"), kept: [bytes("ce-id: h-status")] },
      { name: "no status line", header: bytes("ce-id: h-nostatus\r\nx-a: 1\r\n\r\n"), kept: [bytes("ce-id: h-nostatus"), bytes("x-a: 1")] },
      { name: "no final CRLF", header: bytes("NATS/1.0\r\nce-id: h-open\r\nx-a: 1"), kept: [bytes("ce-id: h-open"), bytes("x-a: 1")] },
      { name: "undecodable body", header: block("ce-id: h-body"), body: Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0x0f) }
    ]

    const maxDeliver = 3
    const deliveries = new Map<number, number>()
    yield* b.subscribe(AssetCreatedEvent, (_event, delivery) =>
      Effect.suspend(() => {
        deliveries.set(delivery.sequence!, (deliveries.get(delivery.sequence!) ?? 0) + 1)
        return Effect.fail(new RetryLater({ delay: "50 millis" }))
      }), { group: "hostile", maxDeliver })

    const refused: Array<string> = []
    const sequences = new Map<number, Hostile>()
    for (const c of cases) {
      const errors = raw.errors.length
      const ackSid = yield* Effect.promise(() => raw.subscribe(`_INBOX.hostile.${refused.length}.${sequences.size}`))
      yield* Effect.promise(() =>
        raw.publish(AssetCreatedEvent.topic, c.header, c.body ?? new Uint8Array(0), `_INBOX.hostile.${refused.length}.${sequences.size}`)
      )
      yield* waitFor(() => raw.messages(ackSid).length > 0 || raw.errors.length > errors, `the server answers ${c.name}`, 5_000)
      const answer = raw.messages(ackSid)[0]
      const ack = answer === undefined ? undefined : JSON.parse(new TextDecoder().decode(answer.body)) as { seq?: number }
      if (ack?.seq === undefined) refused.push(`${c.name}: ${raw.errors.slice(errors).join(" ") || JSON.stringify(ack)}`)
      else sequences.set(ack.seq, c)
    }
    assert.deepEqual(refused, [], "the server stores every one of them")

    yield* waitFor(() => raw.messages(dlq).length >= sequences.size, "every hostile message is dead-lettered", 30_000,
      () => `${raw.messages(dlq).length} of ${sequences.size}`)
    yield* Effect.sleep("1 second")
    const records = raw.messages(dlq)
    assert.equal(records.length, sequences.size, "one record each, no more")

    let omitted = 0
    for (const record of records) {
      const text = new TextDecoder().decode(record.header)
      const sequence = Number(/\r\ncqbus-dlq-sequence: (\d+)\r\n/.exec(text)?.[1])
      const c = sequences.get(sequence)
      assert.ok(c !== undefined, `a record for a hostile message: ${text.slice(0, 300)}`)
      const times = deliveries.get(sequence) ?? 0
      assert.ok(times <= maxDeliver, `${c.name}: handled ${times} times, at most maxDeliver`)
      if (c.omitted === true) {
        omitted++
        assert.match(text, /\r\ncqbus-dlq-omitted: \d+ header bytes, 0 body bytes\r\n/, c.name)
        assert.equal(record.body.length, 0)
        continue
      }
      for (const line of c.kept ?? linesOf(c.header).slice(1)) {
        assert.ok(contains(record.header, concat(bytes("\r\n"), line, bytes("\r\n"))), `${c.name}: the record keeps ${JSON.stringify(new TextDecoder().decode(line).slice(0, 60))}`)
      }
      for (const gone of c.dropped ?? []) assert.ok(!text.includes(gone), `${c.name}: ${gone} is not copied`)
      assert.deepEqual([...record.body], [...(c.body ?? [])], `${c.name}: the original body`)
      const tag = /\r\ncqbus-dlq-error: ([^\r]*)\r\n/.exec(text)?.[1]
      assert.equal(tag, c.body === undefined ? "RetryLater" : "DecodeError", c.name)
    }
    assert.equal(omitted, 1)
    const handledTotal = [...deliveries.values()].reduce((n, v) => n + v, 0)
    console.log(`hostile: ${JSON.stringify({
      sent: sequences.size,
      stored: sequences.size,
      deadLettered: records.length,
      recordsWithoutOriginal: omitted,
      handlerRuns: handledTotal,
      maxRunsPerMessage: Math.max(...deliveries.values()),
      maxDeliver,
      handled: 0,
      lost: sequences.size - records.length
    })}`)
  })))
