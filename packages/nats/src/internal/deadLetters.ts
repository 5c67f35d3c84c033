/**
 * Dead letters on NATS: the record a message becomes when it is dead-lettered (its header block, written byte for
 * byte from the original), storing it in the dead-letter stream before the original is terminated, and reading the
 * records back. The record's header names are public: `DeadLetterHeaders.ts`.
 */
import type { DeadLetter, Headers, Outcome, PublishError } from "@cqbus/core"
import type { JetStreamClient, JetStreamManager } from "@nats-io/jetstream"
import type { Msg } from "@nats-io/nats-core"
import { Effect } from "effect"
import { DeadLetterHeaders } from "../DeadLetterHeaders.ts"
import type { Acker } from "./acks.ts"
import { CR, CRLF, ENCODER, headerSourceOf, LF } from "./headers.ts"
import type { JetStreamDelivery } from "./jetStreamDelivery.ts"
import type { Publisher } from "./publisher.ts"

/** `nats-` in lower case, for the case-insensitive prefix test below. */
const NATS_PREFIX = [110, 97, 116, 115, 45]
const STATUS_LINE = ENCODER.encode("NATS/1.0")

/** Does the line `data[start, end)` name a `Nats-*` header (any case, leading blanks ignored)? */
const isNatsLine = (data: Uint8Array, start: number, end: number): boolean => {
  let i = start
  while (i < end && (data[i] === 32 || data[i] === 9)) i++
  if (end - i < NATS_PREFIX.length) return false
  for (let k = 0; k < NATS_PREFIX.length; k++) {
    // ASCII letters only: OR-ing 0x20 lower-cases A-Z and leaves '-' (45) as it is.
    if ((data[i + k]! | (k < 4 ? 0x20 : 0)) !== NATS_PREFIX[k]) return false
  }
  return true
}

/**
 * The header block of a dead-letter record: `own` lines first (the record's `Nats-Msg-Id` first of all, then the
 * `cqbus-dlq-*` facts; their values must be single lines), then every line of the original block byte for byte —
 * bare CR or LF, NUL, invalid UTF-8, names nats.js rejects and lines without a colon included — except empty lines
 * and `Nats-*` lines. JetStream acts on `Nats-*` headers when it stores a message (`Nats-Msg-Id` dedupe,
 * `Nats-Expected-*` checks, `Nats-Rollup`, TTLs): copied, they would make the server drop or refuse the record, and
 * the dead-lettering would be retried forever. Own lines come first because readers (ours, nats-server's header
 * lookup) take the first match, so a hostile original cannot override them. docs/wire-format.md has the layout.
 */
export const deadLetterBlock = (original: Uint8Array | undefined, own: ReadonlyArray<readonly [string, string]>): Uint8Array => {
  let head = "NATS/1.0\r\n"
  for (const [name, value] of own) head += `${name}: ${value}\r\n`
  const first = ENCODER.encode(head)
  if (original === undefined || original.length === 0) return concat([first, CRLF])
  const parts: Array<Uint8Array> = [first]
  const length = original.length
  let at = 0
  // The status line ("NATS/1.0[ code text]") is replaced by the record's own; anything else in first place is a line.
  if (startsWith(original, STATUS_LINE)) {
    const eol = indexOfCrlf(original, 0)
    at = eol < 0 ? length : eol + 2
  }
  while (at < length) {
    let eol = indexOfCrlf(original, at)
    if (eol < 0) eol = length
    if (eol > at && !isNatsLine(original, at, eol)) parts.push(original.subarray(at, eol), CRLF)
    at = eol + 2
  }
  parts.push(CRLF)
  return concat(parts)
}

const startsWith = (data: Uint8Array, prefix: Uint8Array): boolean => {
  if (data.length < prefix.length) return false
  for (let i = 0; i < prefix.length; i++) if (data[i] !== prefix[i]) return false
  return true
}

const indexOfCrlf = (data: Uint8Array, from: number): number => {
  for (let i = data.indexOf(CR, from); i >= 0; i = data.indexOf(CR, i + 1)) if (data[i + 1] === LF) return i
  return -1
}

const concat = (parts: ReadonlyArray<Uint8Array>): Uint8Array => {
  let size = 0
  for (const part of parts) size += part.length
  const out = new Uint8Array(size)
  let at = 0
  for (const part of parts) {
    out.set(part, at)
    at += part.length
  }
  return out
}

/** Header values cannot carry line breaks. */
const oneLine = (text: string): string => text.replace(/[\r\n]+/g, " ")

/** The outcome that makes a dead letter. */
export type DeadLetterOutcome = Extract<Outcome, { _tag: "DeadLetter" }>

/** Where one subscription's dead letters go, and how their messages are settled. */
export interface DeadLetterWriterOptions {
  readonly publisher: Publisher
  readonly acker: Acker
  /** The subject prefix of the dead-letter stream; a record's subject is `<prefix>.<original subject>`. */
  readonly prefix: string
  /** The subscription's group; `undefined` for an ephemeral consumer. */
  readonly group: string | undefined
}

/**
 * What a dead-letter record is made of: the original message, where it is stored (nowhere, for an ephemeral topic's
 * core-NATS message), and what makes the record's id unique per message and group.
 */
export interface DeadLetterSource {
  readonly subject: string
  readonly body: Uint8Array
  readonly deliveryCount: number
  /** The header block as it came, copied byte for byte. */
  readonly rawHeaders: Uint8Array | undefined
  /** The stream and sequence holding the original; `undefined` for a message no stream stores. */
  readonly stream: string | undefined
  readonly sequence: number | undefined
  /** The consumer (or core subscription) it was delivered to, for the record id when there is no group. */
  readonly consumer: string
  /** Unique per message: `<stream>:<sequence>` for a stored message, the event id for an ephemeral one. */
  readonly recordKey: string
}

/** Stores the dead letters of one subscription and settles their messages. */
export class DeadLetterWriter {
  readonly #options: DeadLetterWriterOptions
  constructor(options: DeadLetterWriterOptions) {
    this.#options = options
  }

  /** Stores the record of `delivery`; fails when the dead-letter stream does not take it. */
  write(delivery: DeadLetterSource, outcome: DeadLetterOutcome): Effect.Effect<void, PublishError> {
    return Effect.suspend(() => {
      const { group, prefix, publisher } = this.#options
      // The id gives one record per message and group, even when a retried dead-lettering publishes twice.
      const own: Array<readonly [string, string]> = [
        ["Nats-Msg-Id", `dlq:${delivery.recordKey}:${group ?? delivery.consumer}`],
        [DeadLetterHeaders.reason, oneLine(outcome.reason)],
        [DeadLetterHeaders.error, oneLine(outcome.errorTag)],
        [DeadLetterHeaders.deliveries, String(Math.max(outcome.attempts, delivery.deliveryCount))],
        [DeadLetterHeaders.subject, delivery.subject]
      ]
      if (delivery.stream !== undefined) own.push([DeadLetterHeaders.stream, delivery.stream])
      if (delivery.sequence !== undefined) own.push([DeadLetterHeaders.sequence, String(delivery.sequence)])
      if (group !== undefined) own.push([DeadLetterHeaders.group, group])
      own.push([DeadLetterHeaders.time, new Date().toISOString()])
      const subject = `${prefix}.${delivery.subject}`
      // Through the publish engine, as events are; the original header lines are copied as bytes, never decoded
      // and re-encoded (nats.js refuses values with a bare CR or LF, and a refusal here looped forever).
      const raw = delivery.rawHeaders
      return publisher.publishBlock(subject, delivery.body, deadLetterBlock(raw, own)).pipe(
        // The record is larger than the original; one that no longer fits the server's max_payload is stored
        // without the original's bytes (for a stored message they stay in the event stream at the sequence the
        // record names).
        Effect.catchIf((error) => error.reason === "TooLarge", () =>
          publisher.publishBlock(
            subject,
            new Uint8Array(0),
            deadLetterBlock(undefined, [
              ...own,
              [DeadLetterHeaders.omitted, `${raw?.length ?? 0} header bytes, ${delivery.body.length} body bytes`]
            ])
          )),
        Effect.asVoid
      )
    })
  }

  /**
   * Stores the dead letter of a message that cannot be redelivered (an ephemeral topic's): when the record cannot be
   * stored either, one warning line says the event is lost, so it is never lost silently.
   */
  store(delivery: DeadLetterSource, outcome: DeadLetterOutcome): Effect.Effect<void> {
    return this.write(delivery, outcome).pipe(
      Effect.catchCause((cause) =>
        Effect.logWarning(
          `cqbus: cannot store a dead letter for an event on ${delivery.subject} (${outcome.errorTag}: ${outcome.reason}); ` +
            `the topic is ephemeral, so the event is lost`,
          cause
        )
      )
    )
  }

  /** Stores a dead letter, then terminates the message; one that cannot be stored is naked instead, never lost. */
  settle(delivery: JetStreamDelivery, outcome: DeadLetterOutcome): Effect.Effect<void> {
    const { acker } = this.#options
    return this.write(delivery, outcome).pipe(
      Effect.andThen(Effect.sync(() => acker.term(delivery))),
      Effect.catchCause((cause) =>
        Effect.andThen(
          Effect.logWarning(
            `cqbus: cannot store a dead letter for ${delivery.subject} #${delivery.sequence}; redelivering it`,
            cause
          ),
          Effect.sync(() => acker.nak(delivery, 1000))
        )
      )
    )
  }
}

/** Every record in the dead-letter stream `stream`, oldest first. */
export const readDeadLetters = (
  jsm: JetStreamManager,
  js: JetStreamClient,
  stream: string
): Effect.Effect<ReadonlyArray<DeadLetter>> =>
  Effect.promise(async () => {
    const info = await jsm.streams.info(stream)
    const total = info.state.messages
    if (total === 0) return []
    const reader = await js.consumers.get(stream)
    const batch = await reader.fetch({ max_messages: total, expires: 2000 })
    const letters: Array<DeadLetter> = []
    for await (const msg of batch) {
      // The original lines of a record are copied byte for byte, so nats.js's decoder may refuse them.
      letters.push(letterOf(headerSourceOf(msg as unknown as Msg).headers, msg.subject, msg.data, msg.time))
      if (letters.length >= total) break
    }
    return letters
  })

/**
 * A stored dead-letter record as a `DeadLetter`: the `cqbus-dlq-*` facts read from its headers (`all`, the record's
 * whole header block), and the original headers, which are the rest except `Nats-*` (the original's `Nats-*` lines
 * are never copied into a record, so any there is the record's own, like its `Nats-Msg-Id`).
 */
export const letterOf = (all: Headers, subject: string, body: Uint8Array, storedAt: Date): DeadLetter => {
  const original: Record<string, string> = {}
  for (const name in all) {
    if (!name.startsWith("cqbus-dlq-") && !name.startsWith("Nats-")) original[name] = all[name]!
  }
  const time = new Date(all[DeadLetterHeaders.time] ?? storedAt)
  return {
    subject: all[DeadLetterHeaders.subject] ?? subject,
    body,
    headers: original as Headers,
    reason: all[DeadLetterHeaders.reason] ?? "",
    errorTag: all[DeadLetterHeaders.error] ?? "",
    deliveryCount: Number(all[DeadLetterHeaders.deliveries] ?? 1),
    sequence: all[DeadLetterHeaders.sequence] === undefined ? undefined : Number(all[DeadLetterHeaders.sequence]),
    group: all[DeadLetterHeaders.group],
    deadLetteredAt: Number.isNaN(time.getTime()) ? storedAt : time
  }
}
