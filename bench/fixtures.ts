/**
 * What both benchmarks share: the runtime's name for the report, and the events they send: 64 realistic PriceUpdated messages (about 100 bytes each once encoded), cycled by
 * cqbus and by its baseline alike, so both sides encode and decode exactly the same bytes.
 */
import { create, type MessageInitShape, toBinary } from "@bufbuild/protobuf"
import { PriceUpdatedSchema } from "@cqbus/testkit/events"

const t0 = Date.UTC(2025, 10, 26, 14, 30, 0)

/** The 64 messages. */
export const messages: Array<MessageInitShape<typeof PriceUpdatedSchema>> = Array.from({ length: 64 }, (_, i) => {
  const price = 189.25 + i * 0.01
  const at = t0 + i * 137
  return {
    occurredAt: { seconds: BigInt(Math.floor(at / 1000)), nanos: (at % 1000) * 1_000_000 },
    assetId: `asset-${(0x7f3c + i).toString(16)}`,
    symbol: "AAPL",
    price: price.toFixed(4),
    previousPrice: (price - 0.01).toFixed(4),
    currency: "USD",
    bid: (price - 0.02).toFixed(4),
    ask: (price + 0.02).toFixed(4),
    volume: String(1500 + i * 25),
    source: "xnas",
    observedAt: { seconds: BigInt(Math.floor((at - 3) / 1000)), nanos: ((at - 3) % 1000) * 1_000_000 }
  }
})

/** The encoded size of one message, for the report. */
export const bodySize: number = toBinary(PriceUpdatedSchema, create(PriceUpdatedSchema, messages[0]!)).byteLength

const deno = (globalThis as { Deno?: { version: { deno: string; v8: string } } }).Deno

/** The runtime and its version, for the report header. */
export const runtime: string = process.versions.bun !== undefined
  ? `bun ${process.versions.bun}`
  : deno !== undefined
  ? `deno ${deno.version.deno} (v8 ${deno.version.v8})`
  : `node ${process.version}`
