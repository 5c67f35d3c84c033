/**
 * One message a JetStream pull consumer delivered, read from its reply subject
 * (`$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>`) without splitting it: the pull loop, the
 * ack verbs and the dead-letter writer all work on it, and the bus sees it as an `IncomingMessage`.
 */
import type { IncomingMessage } from "@cqbus/core/backend"
import type { Msg } from "@nats-io/nats-core"
import type { HeaderSource } from "./headers.ts"
import { NatsDelivery } from "./natsDelivery.ts"

/**
 * One delivery: the message as the bus sees it (`IncomingMessage`) plus what settling it needs. The stream timestamp
 * becomes a `Date` only when something reads it.
 */
export class JetStreamDelivery extends NatsDelivery implements IncomingMessage {
  readonly deliveryCount: number
  readonly sequence: number
  readonly reply: string
  /** Messages the stream still had for the consumer after this one (the reply subject's last number). */
  readonly pending: number
  /** Index of the stream's token in the reply subject (2, or 4 with domain and account hash). */
  readonly #offset: number
  constructor(
    msg: Msg,
    reply: string,
    offset: number,
    deliveryCount: number,
    sequence: number,
    pending: number,
    headers: HeaderSource
  ) {
    super(msg, headers)
    this.#offset = offset
    this.reply = reply
    this.deliveryCount = deliveryCount
    this.sequence = sequence
    this.pending = pending
  }
  get publishedAt(): Date {
    return new Date(Math.floor(Number(this.#token(5)) / 1_000_000))
  }
  /** The stream, from the reply subject. */
  get stream(): string {
    return this.#token(0)
  }
  /** The record key of its dead letter: stream and sequence. */
  get recordKey(): string {
    return `${this.stream}:${this.sequence}`
  }
  /** The consumer, from the reply subject. */
  get consumer(): string {
    return this.#token(1)
  }
  /** Publishes an acknowledgement to the reply subject (the verbs are in `acks.ts`). */
  respond(data: Uint8Array): void {
    this.msg.respond(data)
  }
  #token(index: number): string {
    return this.reply.split(".")[this.#offset + index] ?? ""
  }
}

/** Dot positions of the reply subject being read (one array reused: the callback runs one message at a time). */
const dots = new Int32Array(12)

/** The decimal number between two positions of a string, without allocating the token. */
const numberAt = (text: string, start: number, end: number): number => {
  let n = 0
  for (let i = start; i < end; i++) n = n * 10 + text.charCodeAt(i) - 48
  return n
}

/**
 * The delivery a message with a JetStream ack subject as `reply` stands for; `undefined` when `reply` is not one.
 * `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>` (9 tokens), or with <domain>.<account hash>
 * after ACK and a random token at the end (11–12): the numbers the bus needs are read in place.
 */
export const readDelivery = (msg: Msg, reply: string, headers: HeaderSource): JetStreamDelivery | undefined => {
  if (!reply.startsWith("$JS.ACK.")) return undefined
  let count = 0
  for (let at = reply.indexOf("."); at >= 0 && count < 12; at = reply.indexOf(".", at + 1)) dots[count++] = at
  const tokens = count + 1
  if (tokens !== 9 && tokens < 11) return undefined
  const offset = tokens === 9 ? 2 : 4
  const pendingAt = offset + 6
  return new JetStreamDelivery(
    msg,
    reply,
    offset,
    numberAt(reply, dots[offset + 1]! + 1, dots[offset + 2]!),
    numberAt(reply, dots[offset + 2]! + 1, dots[offset + 3]!),
    numberAt(reply, dots[pendingAt - 1]! + 1, pendingAt < count ? dots[pendingAt]! : reply.length),
    headers
  )
}
