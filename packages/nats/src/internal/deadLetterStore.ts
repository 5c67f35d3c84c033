/**
 * The `deadLetterStore` capability on NATS: the dead-letter stream read one record at a time by stream sequence
 * (`$JS.API.STREAM.MSG.GET` with `next_by_subj`, nats-server 2.9+), so a page costs at most `SCAN` requests and no
 * consumer is left behind; removal by sequence (`STREAM.MSG.DELETE`), and purge by the server's subject-filtered
 * purge when the filter is only a topic. A record's id and a page's cursor are stream sequences.
 */
import { DeadLetterError, DeadLetters, type DeadLetterEntry, type DeadLetterFilter, type DeadLetterStore } from "@cqbus/core"
import type { JetStreamManager, StoredMsg } from "@nats-io/jetstream"
import { Effect } from "effect"
import { DeadLetterHeaders } from "../DeadLetterHeaders.ts"
import { letterOf } from "./deadLetters.ts"
import { isMissingMessage, toDeadLetterError } from "./errors.ts"
import { fromMsgHdrs, HeaderBlock } from "./headers.ts"

/**
 * The most records one page examines: a filter the server cannot apply (group, error tag, reason, time) may match few
 * of them, and the page then ends early with a `next` to continue from, instead of reading on without bound.
 */
export const SCAN = 1000

/** An id or cursor as a stream sequence: a positive integer in decimal, else `undefined`. */
const parseSequence = (id: string): number | undefined => /^[1-9][0-9]{0,15}$/.test(id) ? Number(id) : undefined

/** The raw header block of a stored message (base64 in the API's reply), read past nats.js's refusing decoder. */
interface RawStored {
  readonly smr?: { readonly message?: { readonly hdrs?: unknown } }
}

const decodeBase64 = (text: string): Uint8Array => {
  const binary = atob(text)
  const bytes = new Uint8Array(binary.length)
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i)
  return bytes
}

/**
 * The headers of a stored record. A record copies the original's header lines byte for byte, which nats.js's decoder
 * may refuse; so the raw block is read where the client exposes it, and the decoded headers are the fallback (an
 * undecodable block then reads as none, never as an error).
 */
const headersOf = (stored: StoredMsg) => {
  const hdrs = (stored as unknown as RawStored).smr?.message?.hdrs
  if (typeof hdrs === "string") {
    const bytes = decodeBase64(hdrs)
    return new HeaderBlock(bytes, bytes.length).headers
  }
  try {
    return fromMsgHdrs(stored.header)
  } catch {
    return {}
  }
}

/** Builds the capability over the dead-letter stream `stream`, whose subjects are `<prefix>.<original subject>`. */
export const make = (jsm: JetStreamManager, stream: string, prefix: string): DeadLetterStore => {
  const entryOf = (stored: StoredMsg): DeadLetterEntry => {
    const all = headersOf(stored)
    const subject = stored.subject.startsWith(`${prefix}.`) ? stored.subject.slice(prefix.length + 1) : stored.subject
    const letter = letterOf(all, subject, stored.data, stored.time)
    const origin = all[DeadLetterHeaders.stream]
    const omitted = all[DeadLetterHeaders.omitted]
    return {
      ...letter,
      id: String(stored.seq),
      ...(origin === undefined ? {} : { stream: origin }),
      ...(omitted === undefined ? {} : { omitted })
    }
  }

  const request = <A>(what: string, run: () => Promise<A>): Effect.Effect<A, DeadLetterError> =>
    Effect.tryPromise({ try: run, catch: (cause) => toDeadLetterError(cause, what, stream) })

  /** The first record at or after `sequence` whose subject matches `subject`; `null` at the end. */
  const next = (sequence: number, subject: string) =>
    request(`read the dead letters of stream ${stream}`, () =>
      // nats.js types the request without `next_by_subj` (its `getMessage` predates it); the server (2.9+) takes it.
      jsm.streams.getMessage(stream, { seq: sequence, next_by_subj: subject } as unknown as { seq: number }))

  const subjectOf = (filter: DeadLetterFilter): string => `${prefix}.${filter.topic ?? ">"}`

  const invalidCursor = (cursor: string) =>
    new DeadLetterError({ reason: "InvalidQuery", message: `${JSON.stringify(cursor)} is not a cursor of dead-letter stream ${stream}` })

  const list: DeadLetterStore["list"] = (query) =>
    Effect.gen(function*() {
      const start = query.cursor === undefined ? 1 : parseSequence(query.cursor)
      if (start === undefined) return yield* invalidCursor(query.cursor!)
      let sequence = start
      const matches = DeadLetters.matchesFilter(query)
      const subject = subjectOf(query)
      const items: Array<DeadLetterEntry> = []
      for (let scanned = 0; scanned < SCAN; scanned++) {
        const stored: StoredMsg | null = yield* next(sequence, subject)
        if (stored === null) return { items }
        const entry = entryOf(stored)
        if (matches(entry)) {
          // The page is full: this record starts the next one (so `next` is absent exactly when nothing follows).
          if (items.length === query.limit) return { items, next: entry.id }
          items.push(entry)
        }
        sequence = stored.seq + 1
      }
      return { items, next: String(sequence) }
    })

  const get: DeadLetterStore["get"] = (id) =>
    Effect.gen(function*() {
      const sequence = parseSequence(id)
      if (sequence === undefined) return undefined
      const stored = yield* request(`read dead letter ${id} of stream ${stream}`, () => jsm.streams.getMessage(stream, { seq: sequence }))
      return stored === null ? undefined : entryOf(stored)
    })

  /** Deletes one record; `false` when it is not there (already removed, or never was). */
  const deleteOne = (sequence: number) =>
    Effect.tryPromise({
      try: () => jsm.streams.deleteMessage(stream, sequence, false),
      catch: (cause) => cause
    }).pipe(
      Effect.catch((cause) =>
        // nats-server answers a missing sequence with an API error ("no message found"): nothing to remove.
        isMissingMessage(cause)
          ? Effect.succeed(false)
          : Effect.fail(toDeadLetterError(cause, `remove dead letter ${sequence} of stream ${stream}`, stream))
      )
    )

  const remove: DeadLetterStore["remove"] = (ids) =>
    Effect.gen(function*() {
      let removed = 0
      for (const id of ids) {
        const sequence = parseSequence(id)
        if (sequence !== undefined && (yield* deleteOne(sequence))) removed++
      }
      return removed
    })

  const purge: DeadLetterStore["purge"] = (filter) =>
    Effect.gen(function*() {
      const onlyTopic = Object.entries(filter).every(([key, value]) => key === "topic" || value === undefined)
      if (onlyTopic) {
        // The server removes every record on the subject (or all of them) in one request.
        const response = yield* request(`purge the dead letters of stream ${stream}`, () =>
          filter.topic === undefined ? jsm.streams.purge(stream) : jsm.streams.purge(stream, { filter: subjectOf(filter) }))
        return response.purged
      }
      // Page by page, each page's matches removed before the next is read: memory stays bounded by one page.
      let removed = 0
      let cursor: string | undefined
      for (;;) {
        const page = yield* list({ ...filter, limit: SCAN, ...(cursor === undefined ? {} : { cursor }) })
        removed += yield* remove(page.items.map((item) => item.id))
        if (page.next === undefined) return removed
        cursor = page.next
      }
    })

  return { list, get, remove, purge }
}
