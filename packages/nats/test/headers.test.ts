// The NATS header block reader that every delivery goes through (packages/nats/src/internal/headers.ts): one header is
// found without building the record, names are case-insensitive like NATS and HTTP headers (a Go publisher writes
// `Ce-Type`), `Nats-*` names keep their spelling in the record, status lines are read, and non-ASCII values survive.
import assert from "node:assert/strict"
import { Buffer } from "node:buffer"
import { test } from "node:test"
import { HeaderBlock } from "../src/internal/headers.ts"

const block = (text: string): HeaderBlock => {
  const bytes = new TextEncoder().encode(text)
  // A larger buffer whose first bytes are the block, as nats.js hands it over (header block, then the body).
  const data = new Uint8Array(bytes.length + 4)
  data.set(bytes)
  data.set([1, 2, 3, 4], bytes.length)
  return new HeaderBlock(data, bytes.length)
}

test("nats headers: single headers and the record agree, values trimmed, first value wins", () => {
  const h = block("NATS/1.0\r\nce-id: abc \r\nce-type:\tcqc.events.v1.AssetCreated\r\nx-two: 1\r\nx-two: 2\r\nNats-Msg-Id: m-1\r\n\r\n")
  assert.equal(h.code, 0)
  assert.equal(h.get("ce-id"), "abc")
  assert.equal(h.get("ce-type"), "cqc.events.v1.AssetCreated")
  assert.equal(h.get("x-two"), "1")
  assert.equal(h.get("Nats-Msg-Id"), "m-1")
  assert.equal(h.get("ce-source"), undefined)
  assert.equal(h.get("ce"), undefined, "a prefix of a name is not a name")
  assert.deepEqual(h.headers, {
    "ce-id": "abc",
    "ce-type": "cqc.events.v1.AssetCreated",
    "x-two": "1",
    "Nats-Msg-Id": "m-1"
  })
})

test("nats headers: capitalised names (Go publishers) are found by their lower-case name", () => {
  const h = block("NATS/1.0\r\nCe-Id: g-1\r\nCe-Type: cqc.events.v1.PriceUpdated\r\nContent-Type: application/protobuf\r\n\r\n")
  assert.equal(h.get("ce-id"), "g-1")
  assert.equal(h.get("content-type"), "application/protobuf")
  assert.deepEqual(Object.keys(h.headers), ["ce-id", "ce-type", "content-type"])
})

test("nats headers: a value with non-ASCII characters is read whole, before and after the record exists", () => {
  const text = "NATS/1.0\r\nX-Reason: prix négatif — €\r\nce-id: ü-1\r\n\r\n"
  assert.equal(block(text).get("x-reason"), "prix négatif — €")
  assert.equal(block(text).get("ce-id"), "ü-1")
  const h = block(text)
  assert.equal(h.headers["x-reason"], "prix négatif — €")
  assert.equal(h.get("ce-id"), "ü-1")
})

test("nats headers: status lines give code, description and the pending counts", () => {
  const expired = block("NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 5\r\nNats-Pending-Bytes: 0\r\n\r\n")
  assert.equal(expired.code, 408)
  assert.equal(expired.description, "Request Timeout")
  assert.equal(expired.get("Nats-Pending-Messages"), "5")
  const heartbeat = block("NATS/1.0 100 Idle Heartbeat\r\n\r\n")
  assert.equal(heartbeat.code, 100)
  assert.equal(heartbeat.description, "Idle Heartbeat")
  assert.equal(block("NATS/1.0 409 Consumer Deleted\r\n\r\n").description, "Consumer Deleted")
})

test("nats headers: a Buffer (what nats.js hands over on Node and Bun) is read in place, multi-byte characters included", () => {
  const text = "NATS/1.0\r\nce-id: é-1\r\nCe-Type: T\r\n\r\n"
  const data = Buffer.concat([Buffer.from(text, "utf8"), Buffer.from([0xff, 0xfe])])
  const h = new HeaderBlock(data, Buffer.byteLength(text, "utf8"))
  assert.equal(h.get("ce-id"), "é-1")
  assert.equal(h.get("ce-type"), "T")
  assert.deepEqual(h.headers, { "ce-id": "é-1", "ce-type": "T" })
})

test("nats headers: a body that starts like a header line is not read as one (Buffer and Uint8Array)", () => {
  const text = "NATS/1.0\r\nce-type: T\r\n\r\n"
  const body = "ce-id: from-the-body\r\n"
  const h = new HeaderBlock(Buffer.from(text + body, "utf8"), Buffer.byteLength(text, "utf8"))
  assert.equal(h.get("ce-id"), undefined)
  assert.equal(h.get("ce-type"), "T")
  const plain = new TextEncoder().encode(text + body)
  assert.equal(new HeaderBlock(plain, new TextEncoder().encode(text).length).get("ce-id"), undefined)
})
