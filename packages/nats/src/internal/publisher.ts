/**
 * The JetStream publish engine. Every event goes out as a plain core-NATS publish whose reply subject is a token under
 * one private inbox wildcard subscription per connection; JetStream sends the PubAck there. Pending publishes live in
 * one table keyed by that token, one periodic sweep enforces every deadline, and each PubAck is parsed once. nats.js's
 * `js.publish` instead builds a request per message (an inbox entry, a promise, a timer, error objects for traces and
 * for cancelling that timer), which is most of its cost per message (issue 6, bench/README.md).
 *
 * Guarantees: at most `maxPending` publishes await their PubAck at once and further publishers wait for a slot, in
 * call order (backpressure, not unbounded buffering); every publish ends within its deadline; a publish succeeds only
 * with a PubAck from the server. When the connection drops, the PubAcks still outstanding can no longer arrive (the
 * reply subscription lived on the lost connection), so those publishes fail at once, retriably; publishes made while
 * disconnected are held and sent after the reconnect if their deadline allows — nats.js would buffer them but
 * discards that buffer at each reconnect attempt. When the connection closes, everything pending fails `Closed`.
 *
 * A `503` "no responders" reply means either that no stream captures the subject or that the stream has no leader
 * right now (a clustered stream during an election: only the leader listens on its subjects). JetStream is asked once
 * which it is (`$JS.API.STREAM.NAMES` for the subject, shared by every publish to that topic for a second): no stream
 * fails `NoStream` at once; a stream, or no answer, sends the message again every few hundred milliseconds until its
 * deadline, and then fails `Unavailable`, retriable (issue 11).
 */
import type { Headers, PublishAck, PublishDepth, PublishError } from "@cqbus/core"
import { createInbox, type Msg, type MsgHdrs, type NatsConnection, type Status } from "@nats-io/nats-core"
import { Effect, type Scope } from "effect"
import { deniedPublishSubject, isNoResponders, publishFailure, toPublishError } from "./errors.ts"
import { EncodedHeaders, encodeHeaders } from "./headers.ts"
import { toResult } from "./pubAck.ts"

/**
 * How the engine behaves.
 */
export interface PublisherOptions {
  /** How long a publish may take until its PubAck, waiting for a slot or a connection included, in milliseconds. */
  readonly timeout: number
  /** How many publishes may await their PubAck at once. */
  readonly maxPending: number
}

/**
 * The engine of one connection.
 */
export interface Publisher {
  /** Publishes `body` on `topic` with `headers` and `Nats-Msg-Id: msgId`; succeeds with the PubAck. */
  readonly publish: (
    topic: string,
    body: Uint8Array,
    headers: Headers,
    msgId: string
  ) => Effect.Effect<PublishAck, PublishError>
  /**
   * The same with a complete header block sent as it is (its `Nats-Msg-Id` included), for messages that carry another
   * message's header lines byte for byte: a dead letter keeps lines nats.js would refuse to encode.
   */
  readonly publishBlock: (
    topic: string,
    body: Uint8Array,
    block: Uint8Array
  ) => Effect.Effect<PublishAck, PublishError>
  /** Publishes awaiting their PubAck, and those waiting for a slot, a connection or a stream leader. */
  readonly depth: () => PublishDepth
}

type Resume = (effect: Effect.Effect<PublishAck, PublishError>) => void

/** One publish, from the call until its result. */
class Entry {
  /** The reply token once sent; `-1` while waiting for a slot or a connection. */
  token = -1
  done = false
  readonly topic: string
  readonly body: Uint8Array
  readonly headers: Headers
  /** A complete header block, sent as it is instead of `headers` and `msgId` when given. */
  readonly block: Uint8Array | undefined
  readonly msgId: string
  readonly deadline: number
  readonly resume: Resume
  /** When a publish the stream could not take (no leader) goes out again; meaningful while it is in `delayed`. */
  retryAt = 0
  /** The error it fails with if its deadline passes before a retry succeeds. */
  failure: PublishError | undefined = undefined
  constructor(
    topic: string,
    body: Uint8Array,
    headers: Headers,
    block: Uint8Array | undefined,
    msgId: string,
    deadline: number,
    resume: Resume
  ) {
    this.topic = topic
    this.body = body
    this.headers = headers
    this.block = block
    this.msgId = msgId
    this.deadline = deadline
    this.resume = resume
  }
}

const DECODER = new TextDecoder()

/** How long after a `503` for an existing stream the message goes out again (rounded up to the sweep interval). */
const RETRY_MS = 200
/** How long one answer to "does a stream capture this subject?" is reused for further `503`s on the topic. */
const PROBE_REUSE_MS = 1_000
/** How long that question may take; no answer counts as "unknown", i.e. retriable. */
const PROBE_TIMEOUT_MS = 1_000
const STREAM_NAMES = "$JS.API.STREAM.NAMES"

/** What JetStream says about a subject that got "no responders". */
type StreamVerdict = "missing" | "exists" | "unknown"

/** The verdict in a `$JS.API.STREAM.NAMES` reply: no JetStream at all (a status reply) counts as no stream. */
const streamVerdict = (msg: Msg): StreamVerdict => {
  if (msg.data.length === 0) return msg.headers?.code === 503 ? "missing" : "unknown"
  try {
    const names = JSON.parse(DECODER.decode(msg.data)) as { readonly streams?: unknown; readonly error?: unknown }
    if (names.error !== undefined) return "unknown"
    return Array.isArray(names.streams) && names.streams.length > 0 ? "exists" : "missing"
  } catch {
    return "unknown"
  }
}

/** The reply token at the end of an inbox subject (decimal digits from `from`); `-1` for anything else. */
const tokenOf = (subject: string, from: number): number => {
  const length = subject.length
  if (from >= length || length - from > 9) return -1
  let token = 0
  for (let i = from; i < length; i++) {
    const c = subject.charCodeAt(i)
    if (c < 48 || c > 57) return -1
    token = token * 10 + (c - 48)
  }
  return token
}

const NO_HEADERS: Headers = Object.freeze({})

/**
 * Starts the engine on a connection: subscribes its inbox, watches the connection's status, and sweeps deadlines.
 * When the scope closes, publishes still waiting for a slot fail `Closed`, those already sent get their PubAck or
 * time out, and the inbox is unsubscribed.
 */
export const make = (nc: NatsConnection, options: PublisherOptions): Effect.Effect<Publisher, never, Scope.Scope> =>
  Effect.gen(function*() {
    const clock = yield* Effect.clockWith(Effect.succeed)
    const maxPending = Math.max(1, Math.floor(options.maxPending))
    // An account restricted to a custom inbox prefix sets it on the connection (`inboxPrefix`), which nats.js keeps
    // in its options only.
    const inboxPrefix = (nc as { readonly options?: { readonly inboxPrefix?: string } }).options?.inboxPrefix
    const prefix = `${createInbox(inboxPrefix)}.`

    /** Sent, awaiting the PubAck, by reply token; insertion order is send order. */
    const inFlight = new Map<number, Entry>()
    /** Not sent yet (window full or disconnected), in call order from `head`; settled entries are skipped. */
    let waiting: Array<Entry | undefined> = []
    let head = 0
    /** Refused for want of a stream leader; queued again at their `retryAt` by the sweep. */
    const delayed = new Set<Entry>()
    /** Publishes answered `503`, while JetStream is asked whether a stream captures their subject (`depth` counts them). */
    const probing = new Set<Entry>()
    /** Per topic, the last "does a stream capture it?" question: its answer and when, or the publishes awaiting it. */
    const probes = new Map<string, { at: number; verdict: StreamVerdict | undefined; waiters: Array<(verdict: StreamVerdict) => void> }>()
    let counter = 0
    let connected = !nc.isClosed()
    /** Set once publishing has ended for good: every publish fails with it. */
    let ended: ((topic: string) => PublishError) | undefined
    let onIdle: (() => void) | undefined

    const settle = (entry: Entry, effect: Effect.Effect<PublishAck, PublishError>): void => {
      if (entry.done) return
      entry.done = true
      entry.resume(effect)
    }

    /** Removes a sent entry from the table; wakes a closing engine when the table is empty. */
    const remove = (entry: Entry): void => {
      inFlight.delete(entry.token)
      if (inFlight.size === 0) onIdle?.()
    }

    // One options object for every publish: nats.js reads it synchronously and keeps nothing of it.
    const sendOptions: { reply: string; headers?: MsgHdrs } = { reply: "" }
    const send = (entry: Entry): void => {
      // A small integer: a cheap map key, and its digits are the reply subject's last token. It wraps long before
      // it could leave the small-integer range; an entry lives at most one publish timeout.
      const token = counter
      counter = counter === 999_999_999 ? 0 : counter + 1
      try {
        sendOptions.headers = entry.block === undefined
          ? encodeHeaders(entry.headers, entry.msgId)
          : new EncodedHeaders(entry.block)
      } catch (cause) {
        return settle(entry, Effect.fail(publishFailure.encode(cause, entry.topic)))
      }
      try {
        sendOptions.reply = prefix + token
        nc.publish(entry.topic, entry.body, sendOptions)
      } catch (cause) {
        return settle(entry, Effect.fail(publishFailure.refused(cause, entry.topic)))
      }
      entry.token = token
      inFlight.set(token, entry)
    }

    /** Sends waiting publishes while there is a slot and a connection. */
    const pump = (): void => {
      while (head < waiting.length && inFlight.size < maxPending && connected) {
        const entry = waiting[head]!
        waiting[head++] = undefined
        if (!entry.done) send(entry)
      }
      if (head === waiting.length) {
        waiting = []
        head = 0
      } else if (head >= 1024 && head * 2 >= waiting.length) {
        waiting = waiting.slice(head)
        head = 0
      }
    }

    const submit = (entry: Entry): void => {
      if (ended !== undefined) return settle(entry, Effect.fail(ended(entry.topic)))
      // Behind publishes already waiting, so slots go out in call order.
      if (connected && head === waiting.length && inFlight.size < maxPending) send(entry)
      else waiting.push(entry)
    }

    /** An interrupted publish: one still waiting is skipped by `pump`; one sent meanwhile frees its slot. */
    const cancel = (entry: Entry): void => {
      if (entry.done) return
      entry.done = true
      if (entry.token >= 0) {
        remove(entry)
        pump()
      }
    }

    const failInFlight = (error: (entry: Entry) => PublishError): void => {
      for (const entry of inFlight.values()) settle(entry, Effect.fail(error(entry)))
      inFlight.clear()
      onIdle?.()
    }

    const failWaiting = (error: (entry: Entry) => PublishError): void => {
      for (let i = head; i < waiting.length; i++) {
        const entry = waiting[i]
        if (entry !== undefined) settle(entry, Effect.fail(error(entry)))
      }
      waiting = []
      head = 0
      for (const entry of delayed) settle(entry, Effect.fail(error(entry)))
      delayed.clear()
    }

    /** Asks JetStream whether a stream captures `topic`, once per topic at a time; `done` gets the answer. */
    const probe = (topic: string, done: (verdict: StreamVerdict) => void): void => {
      const now = clock.currentTimeMillisUnsafe()
      const known = probes.get(topic)
      if (known?.verdict === undefined && known !== undefined) return void known.waiters.push(done)
      if (known?.verdict !== undefined && now - known.at < PROBE_REUSE_MS) return done(known.verdict)
      const state = { at: now, verdict: undefined as StreamVerdict | undefined, waiters: [done] }
      probes.set(topic, state)
      const finish = (verdict: StreamVerdict): void => {
        state.verdict = verdict
        state.at = clock.currentTimeMillisUnsafe()
        const waiters = state.waiters
        state.waiters = []
        for (const waiter of waiters) waiter(verdict)
      }
      if (nc.isClosed()) return finish("unknown")
      nc.request(STREAM_NAMES, JSON.stringify({ subject: topic }), { timeout: PROBE_TIMEOUT_MS }).then(
        (msg) => finish(streamVerdict(msg)),
        (cause: unknown) => finish(isNoResponders(cause) ? "missing" : "unknown")
      )
    }

    /** A `503` for a sent publish: `NoStream` when no stream captures the topic, else sent again until its deadline. */
    const noResponders = (entry: Entry): void => {
      entry.token = -1
      probing.add(entry)
      probe(entry.topic, (verdict) => {
        probing.delete(entry)
        if (entry.done) return
        if (verdict === "missing") return settle(entry, Effect.fail(publishFailure.noResponders(entry.topic)))
        entry.failure = publishFailure.unavailable(
          entry.topic,
          verdict === "exists"
            ? "the stream exists but nothing took the message: it has no leader right now"
            : "no responders, and JetStream did not say whether a stream captures the subject"
        )
        entry.retryAt = clock.currentTimeMillisUnsafe() + RETRY_MS
        if (ended !== undefined) return settle(entry, Effect.fail(ended(entry.topic)))
        delayed.add(entry)
      })
    }

    /** Publishing has ended (connection closed, engine closed): fail everything pending and all that comes. */
    const end = (error: (topic: string) => PublishError): void => {
      ended ??= error
      failWaiting((entry) => error(entry.topic))
      failInFlight((entry) => error(entry.topic))
    }

    const sweep = (): void => {
      const now = clock.currentTimeMillisUnsafe()
      for (const entry of inFlight.values()) {
        if (entry.deadline <= now) {
          settle(entry, Effect.fail(publishFailure.timeout(entry.topic)))
          remove(entry)
        }
      }
      let expired = false
      for (let i = head; i < waiting.length; i++) {
        const entry = waiting[i]
        if (entry !== undefined && !entry.done && entry.deadline <= now) {
          settle(entry, Effect.fail(entry.failure ?? publishFailure.notSent(entry.topic, connected)))
          expired = true
        }
      }
      for (const entry of delayed) {
        if (entry.done) delayed.delete(entry)
        else if (entry.deadline <= now) {
          delayed.delete(entry)
          settle(entry, Effect.fail(entry.failure!))
        } else if (entry.retryAt <= now) {
          delayed.delete(entry)
          waiting.push(entry)
        }
      }
      if (probes.size > 0) {
        for (const [topic, state] of probes) {
          if (state.verdict !== undefined && now - state.at >= PROBE_REUSE_MS) probes.delete(topic)
        }
      }
      // Drop what expired or was interrupted, so a long outage with publishers retrying does not pile them up.
      if (expired) {
        waiting = waiting.slice(head).filter((entry) => entry !== undefined && !entry.done)
        head = 0
      }
      pump()
    }

    const onReply = (error: Error | null, msg: Msg): void => {
      if (error !== null) {
        // The inbox subscription itself failed (the account may not subscribe to it): no PubAck can arrive.
        return end((topic) => toPublishError(error, topic))
      }
      const entry = inFlight.get(tokenOf(msg.subject, prefix.length))
      // No entry: the PubAck came after the deadline, or the publish was interrupted.
      if (entry === undefined) return
      remove(entry)
      if (msg.data.length === 0 && msg.headers?.code === 503) noResponders(entry)
      else settle(entry, toResult(entry.topic, msg))
      pump()
    }

    const onStatus = (status: Status): void => {
      switch (status.type) {
        case "disconnect":
          connected = false
          failInFlight((entry) => publishFailure.lost(entry.topic))
          break
        case "reconnect":
          connected = true
          pump()
          break
        case "error": {
          // The server refuses a publish asynchronously (`-ERR Permissions Violation for Publish to ...`): it belongs
          // to the oldest outstanding publish on that subject, as nats.js assumes for its own requests.
          const subject = deniedPublishSubject(status.error)
          if (subject === undefined) break
          for (const entry of inFlight.values()) {
            if (entry.topic === subject) {
              settle(entry, Effect.fail(toPublishError(status.error, subject)))
              remove(entry)
              break
            }
          }
          break
        }
        case "close":
          end(publishFailure.closed)
          break
      }
    }

    // On a connection closed already, every publish fails `Closed` (nats.js refuses to subscribe on it).
    if (nc.isClosed()) end(publishFailure.closed)
    const subscription = nc.isClosed() ? undefined : nc.subscribe(`${prefix}*`, { callback: onReply })

    // The deadline sweep; a deadline is met to within one interval.
    const interval = Math.min(1_000, Math.max(10, Math.floor(options.timeout / 10)))
    yield* Effect.forkScoped(Effect.forever(Effect.andThen(Effect.sleep(interval), Effect.sync(sweep))))

    // nats.js pushes a "close" status to every listener before it closes, so the loop also sees the end.
    const statuses = nc.status()
    yield* Effect.forkScoped(Effect.promise(async () => {
      for await (const status of statuses) onStatus(status)
    }))
    // And `closed()` settles on every path to a closed connection: a publish held while the connection was away must
    // fail `Closed` at once, not wait out its deadline as `NotConnected`, even if the "close" status went unseen (seen
    // once when expired credentials ended a reconnect).
    yield* Effect.forkScoped(Effect.promise(() => nc.closed()).pipe(Effect.andThen(Effect.sync(() => end(publishFailure.closed)))))

    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        // Nothing new comes in; what was sent gets its PubAck, or fails by its deadline through the sweep.
        failWaiting((entry) => publishFailure.closed(entry.topic))
        ended ??= publishFailure.closed
        if (inFlight.size > 0) {
          yield* Effect.callback<void>((resume) => {
            onIdle = () => resume(Effect.void)
            if (inFlight.size === 0) onIdle()
          })
        }
        // `stop` ends the status iterator (nats.js `QueuedIterator`), so an injected connection keeps no listener.
        ;(statuses as { readonly stop?: () => void }).stop?.()
        if (!nc.isClosed()) subscription?.unsubscribe()
      })
    )

    const start = (
      topic: string,
      body: Uint8Array,
      headers: Headers,
      block: Uint8Array | undefined,
      msgId: string
    ): Effect.Effect<PublishAck, PublishError> =>
      // A one-argument register: Effect then creates no AbortSignal per publish.
      Effect.callback<PublishAck, PublishError>((resume) => {
        const deadline = clock.currentTimeMillisUnsafe() + options.timeout
        const entry = new Entry(topic, body, headers, block, msgId, deadline, resume)
        submit(entry)
        // An interrupted publish that is still waiting must not be sent later. One already sent keeps its slot until
        // its PubAck or deadline, as it is still in flight on the wire; skipping the canceller then saves two
        // allocations per publish.
        return entry.done || entry.token >= 0 ? undefined : Effect.sync(() => cancel(entry))
      })

    const depth = (): PublishDepth => {
      let queued = 0
      for (let i = head; i < waiting.length; i++) if (waiting[i] !== undefined && !waiting[i]!.done) queued++
      for (const entry of delayed) if (!entry.done) queued++
      for (const entry of probing) if (!entry.done) queued++
      return { inFlight: inFlight.size, waiting: queued }
    }

    return {
      depth,
      publish: (topic, body, headers, msgId) => start(topic, body, headers, undefined, msgId),
      publishBlock: (topic, body, block) => start(topic, body, NO_HEADERS, block, "")
    }
  })
