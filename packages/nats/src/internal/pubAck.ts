/**
 * Reading JetStream's reply to a publish (the PubAck, an API error, or a status), apart from the engine that sends and
 * times publishes: the common PubAck is read without `JSON.parse`, which costs more than the rest of its handling.
 */
import type { PublishAck, PublishError } from "@cqbus/core"
import type { ApiError } from "@nats-io/jetstream"
import type { Msg } from "@nats-io/nats-core"
import { Effect } from "effect"
import { publishFailure, toPublishError } from "./errors.ts"

const DECODER = new TextDecoder()

/** The PubAck JetStream sends: a stored message, or an API error. */
interface PubAckJson {
  readonly stream?: unknown
  readonly seq?: unknown
  readonly duplicate?: unknown
  readonly error?: ApiError
}

/** The result a reply on the publish inbox stands for: the stored message, or why it was not stored. */
export const toResult = (topic: string, msg: Msg): Effect.Effect<PublishAck, PublishError> => {
  const data = msg.data
  if (data.length === 0) {
    // A status message instead of a PubAck: 503 "no responders" means no stream captures the subject.
    const status = msg.headers
    return Effect.fail(
      status?.code === 503
        ? publishFailure.noResponders(topic)
        : publishFailure.invalid(topic, status === undefined ? "an empty reply" : `status ${status.status}`)
    )
  }
  const text = DECODER.decode(data)
  const stored = readPubAck(text)
  if (stored !== undefined) {
    return Effect.succeed({ topic, stream: stored.stream, sequence: stored.seq, duplicate: stored.duplicate })
  }
  let ack: PubAckJson
  try {
    ack = JSON.parse(text) as PubAckJson
  } catch (cause) {
    return Effect.fail(toPublishError(cause, topic))
  }
  if (ack.error !== undefined) return Effect.fail(publishFailure.api(ack.error, topic))
  if (typeof ack.stream !== "string" || ack.stream === "" || typeof ack.seq !== "number") {
    return Effect.fail(publishFailure.invalid(topic, text.slice(0, 200)))
  }
  return Effect.succeed({ topic, stream: ack.stream, sequence: ack.seq, duplicate: ack.duplicate === true })
}

/** The stream name of the previous PubAck: nearly every PubAck names the same stream, so its string is reused. */
let lastStream = ""

/** Skips spaces from `i`. */
const skipSpaces = (text: string, i: number): number => {
  while (text.charCodeAt(i) === 32) i++
  return i
}

/**
 * A PubAck of a stored message in the shape nats-server writes (`{"stream":"NAME", "seq": N}`, maybe with
 * `"domain"` and `"duplicate": true`), read without `JSON.parse` (which costs more than the rest of the reply's
 * handling). `undefined` for anything else — an error, escapes, another layout — which `JSON.parse` then reads.
 */
export const readPubAck = (
  text: string
): { readonly stream: string; readonly seq: number; readonly duplicate: boolean } | undefined => {
  if (text.charCodeAt(0) !== 123 || text.indexOf('"error"') >= 0) return undefined
  const key = text.indexOf('"stream":')
  if (key < 0) return undefined
  const start = skipSpaces(text, key + 9) + 1
  if (text.charCodeAt(start - 1) !== 34) return undefined
  const end = text.indexOf('"', start)
  if (end <= start || text.lastIndexOf("\\", end) >= start) return undefined
  const stream = end - start === lastStream.length && text.startsWith(lastStream, start)
    ? lastStream
    : (lastStream = text.slice(start, end))
  const seqKey = text.indexOf('"seq":')
  if (seqKey < 0) return undefined
  let i = skipSpaces(text, seqKey + 6)
  const first = i
  let seq = 0
  for (let c = text.charCodeAt(i); c >= 48 && c <= 57; c = text.charCodeAt(++i)) seq = seq * 10 + (c - 48)
  if (i === first || i - first > 15) return undefined
  const dupKey = text.indexOf('"duplicate":')
  const duplicate = dupKey >= 0 && text.startsWith("true", skipSpaces(text, dupKey + 12))
  return { stream, seq, duplicate }
}
