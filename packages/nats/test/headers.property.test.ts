// Property tests (fast-check, fixed seed; a failure prints the seed and the shrunk input) for the shared NATS header
// code (packages/nats/src/internal/headers.ts): arbitrary bytes as a header block never make the reader throw or loop,
// a single header read agrees with the full record (native Buffer search and text paths alike), a value runs to the
// CRLF that ends its line (a bare CR or LF stays in it), the dead-letter block keeps every original line byte for
// byte except `Nats-*` lines and lets no original line shadow its own, and every header value either round-trips
// through the publish encoder (trimmed, as nats.js does) or is refused there with a typed error.
import { InvalidArgumentError } from "@nats-io/nats-core"
import assert from "node:assert/strict"
import { Buffer } from "node:buffer"
import { test } from "node:test"
import fc from "fast-check"
import { deadLetterBlock } from "../src/internal/deadLetters.ts"
import { encodeHeaders, HeaderBlock } from "../src/internal/headers.ts"

const RUNS = { seed: 11, numRuns: 1_000 } as const
const ENCODER = new TextEncoder()
const bytes = (text: string): Uint8Array => ENCODER.encode(text)

/** A byte from the alphabet hostile blocks are made of (CR, LF, NUL, ':', space, tab, high bytes, letters). */
const hostileByte = fc.constantFrom(13, 10, 13, 10, 0, 58, 32, 9, 0xff, 0xc3, 0x80, 97, 98, 99, 45, 78, 65, 84, 83)
const line = fc.oneof(
  fc.array(hostileByte, { maxLength: 30 }).map((b) => Uint8Array.from(b)),
  fc.tuple(fc.constantFrom("ce-id", "Ce-Id", "x-a", "Nats-Msg-Id", "nats-expected-stream", "cqbus-dlq-reason", "bad name"),
    fc.array(hostileByte, { maxLength: 20 })).map(([name, value]) => Uint8Array.from([...bytes(`${name}: `), ...value]))
)
/** Header blocks: well-formed shells around hostile lines, and plain arbitrary bytes. */
const block = fc.oneof(
  fc.tuple(fc.constantFrom("NATS/1.0", "NATS/1.0 503 x", "NATS/1.0 abc", "", "ce-id: first"), fc.array(line, { maxLength: 8 }), fc.boolean())
    .map(([status, lines, closed]) => {
      const parts: Array<number> = [...bytes(status)]
      for (const l of lines) parts.push(13, 10, ...l)
      if (closed) parts.push(13, 10, 13, 10)
      return Uint8Array.from(parts)
    }),
  fc.uint8Array({ maxLength: 120 })
)
const NAMES = ["ce-id", "x-a", "cqbus-dlq-reason", "nats-expected-stream", "Nats-Msg-Id", "bad name", "missing"]

/** The lines (CRLF-separated, non-empty) after the first line: what a dead letter must keep. */
const linesAfterStatus = (data: Uint8Array): Array<Uint8Array> => {
  const out: Array<Uint8Array> = []
  let at = 0
  let first = true
  for (let i = 0; i <= data.length; i++) {
    if (i === data.length || (data[i] === 13 && data[i + 1] === 10)) {
      const piece = data.subarray(at, i)
      const isStatus = first && Buffer.from(piece).toString("latin1").startsWith("NATS/1.0")
      if (!isStatus && piece.length > 0) out.push(piece)
      first = false
      at = i + 2
      i++
    }
  }
  return out
}
const isNatsLine = (l: Uint8Array): boolean => /^[ \t]*nats-/i.test(Buffer.from(l).toString("latin1"))
const indexOfBytes = (haystack: Uint8Array, needle: Uint8Array, from: number): number =>
  Buffer.from(haystack.buffer, haystack.byteOffset, haystack.length).indexOf(Buffer.from(needle), from)

test("headers property: any bytes as a header block are read without a throw, and one header agrees with the record", () => {
  fc.assert(
    fc.property(block, fc.uint8Array({ maxLength: 16 }), (data, body) => {
      const whole = Uint8Array.from([...data, ...body])
      for (const h of [new HeaderBlock(whole, data.length), new HeaderBlock(Buffer.from(whole), data.length)]) {
        const code = h.code
        assert.ok(code === 0 || (code >= 100 && code <= 999), `code ${code}`)
        assert.equal(typeof h.description, "string")
        for (const name of NAMES) {
          const one = h.get(name)
          assert.ok(one === undefined || typeof one === "string")
          // The record is read from the same block: a single read and the record name the same value.
          assert.equal(one, h.headers[name.startsWith("Nats-") ? name : name], `get(${name}) vs the record`)
        }
        assert.deepEqual([...h.bytes], [...data])
      }
    }),
    RUNS
  )
})

test("headers property: a value runs to the CRLF that ends its line, a bare CR or LF included", () => {
  const value = fc.array(fc.constantFrom("a", "b", "\r", "\n", "\u0000", "é", ":", "-"), { minLength: 1, maxLength: 12 })
    .map((chars) => chars.join(""))
    .filter((v) => !v.includes("\r\n") && v.trim() === v && !v.endsWith("\r") && v.trim().length > 0)
  fc.assert(
    fc.property(value, (v) => {
      const text = `NATS/1.0\r\nce-id: ${v}\r\nx-after: 1\r\n\r\n`
      for (const data of [Buffer.from(text), bytes(text)]) {
        const h = new HeaderBlock(data, data.length)
        assert.equal(h.get("ce-id"), v)
        assert.equal(h.get("x-after"), "1")
      }
    }),
    RUNS
  )
})

test("headers property: a dead-letter block keeps every original line but Nats-* byte for byte, its own lines first", () => {
  const own: ReadonlyArray<readonly [string, string]> = [["Nats-Msg-Id", "dlq:S:1:g"], ["cqbus-dlq-reason", "why"]]
  fc.assert(
    fc.property(block, (original) => {
      const record = deadLetterBlock(original, own)
      const head = bytes("NATS/1.0\r\nNats-Msg-Id: dlq:S:1:g\r\ncqbus-dlq-reason: why\r\n")
      assert.deepEqual([...record.subarray(0, head.length)], [...head], "own lines first")
      assert.deepEqual([...record.subarray(record.length - 2)], [13, 10])
      // Every kept line, in order, framed by CRLF on both sides.
      let at = head.length - 2
      for (const l of linesAfterStatus(original)) {
        if (isNatsLine(l)) continue
        const framed = Uint8Array.from([13, 10, ...l, 13, 10])
        const found = indexOfBytes(record, framed, at)
        assert.ok(found >= 0, `line ${JSON.stringify(Buffer.from(l).toString("latin1"))} kept`)
        at = found + framed.length - 2
      }
      const read = new HeaderBlock(record, record.length)
      assert.equal(read.get("Nats-Msg-Id"), "dlq:S:1:g", "no original line shadows the record's id")
      assert.equal(read.get("cqbus-dlq-reason"), "why")
      assert.equal(read.code, 0)
    }),
    RUNS
  )
})

test("headers property: a header value (an ordering key, say) round-trips through the publish encoder or is refused", () => {
  const value = fc.oneof(
    fc.string({ unit: "binary", maxLength: 40 }),
    fc.array(fc.constantFrom("k", " ", "\t", "\r", "\n", "é", "😀", ":", "\u0000"), { maxLength: 12 }).map((c) => c.join(""))
  )
  fc.assert(
    fc.property(value, (v) => {
      let encoded: Uint8Array
      try {
        encoded = (encodeHeaders({ "ce-partitionkey": v }, "id-1") as unknown as { encode(): Uint8Array }).encode()
      } catch (error) {
        assert.ok(error instanceof InvalidArgumentError, String(error))
        assert.ok(/[\r\n]/.test(v), `only a CR or LF is refused, not ${JSON.stringify(v)}`)
        return
      }
      assert.ok(!/[\r\n]/.test(v))
      const h = new HeaderBlock(Buffer.from(encoded), encoded.length)
      assert.equal(h.get("ce-partitionkey"), v.trim(), "read back as written (trimmed, as nats.js trims)")
      assert.equal(h.get("Nats-Msg-Id"), "id-1")
    }),
    RUNS
  )
})
