/**
 * The memory transport's retained log: storage in sequence order, the per-topic limits and `maxAge`, dedupe by event
 * id, and reading from a position. It knows nothing of consumers; `MemoryTransport` keeps their cursors into it.
 */
import { PublishError } from "../Errors.ts"
import type { DeliverPolicy, Headers, OutgoingMessage, PublishAck } from "../Transport.ts"

/** A retained message. */
export interface StoredMessage {
  readonly sequence: number
  readonly topic: string
  readonly body: Uint8Array
  readonly headers: Headers
  readonly eventId: string
  readonly publishedAt: Date
}

/** A retained message with what the log needs to expire and evict it. */
export interface Entry extends StoredMessage {
  readonly time: number
  readonly size: number
  deleted: boolean
}

interface TopicStats {
  count: number
  bytes: number
  /** This topic's live entries, oldest first, from `head`. */
  readonly entries: Array<Entry>
  head: number
}

/** The limits of a log, already validated and defaulted. */
export interface MemoryLogLimits {
  readonly maxMessages: number
  readonly maxBytes: number
  /** Milliseconds, `Infinity` for no limit. */
  readonly maxAge: number
  readonly maxMessageSize: number
  readonly discardNew: boolean
  /** The dedupe window in milliseconds. */
  readonly duplicateWindow: number
  /** The stream name reported in acks. */
  readonly stream: string
}

export interface MemoryLog {
  /**
   * Stores a message (or finds its duplicate inside the dedupe window) at time `now`, evicting or refusing at the
   * topic's limits. A `PublishError` is returned, not thrown.
   */
  readonly append: (message: OutgoingMessage, now: number) => PublishAck | PublishError
  /**
   * The error for a message larger than the log accepts, or `undefined`: the same limit holds for messages it does not
   * store (an ephemeral publish), as NATS's max payload holds for every publish.
   */
  readonly tooLarge: (message: OutgoingMessage) => PublishError | undefined
  /** Removes what `maxAge` has expired at `now`. */
  readonly expire: (now: number) => void
  /** The first live entry at or after `sequence` whose topic `matches`. */
  readonly next: (sequence: number, matches: (topic: string) => boolean) => Entry | undefined
  /** How many live entries at or after `sequence` have a topic that `matches`. */
  readonly count: (sequence: number, matches: (topic: string) => boolean) => number
  /**
   * Where a new consumer with this policy and pattern starts: the sequence of its first new delivery, and the
   * deliveries to make before it (`"lastPerSubject"`: the latest entry of each matching topic, in sequence order).
   */
  readonly startPosition: (
    policy: DeliverPolicy,
    matches: (topic: string) => boolean
  ) => { readonly cursor: number; readonly first: ReadonlyArray<Entry> }
  /** The sequence the next stored message gets. */
  readonly nextSequence: () => number
  /** The live entries, oldest first, optionally of one topic. */
  readonly messages: (topic: string | undefined) => ReadonlyArray<StoredMessage>
}

/**
 * Binary search over items sorted by a number (`key`): the index of the first item at or after `from` whose key is at
 * least `target`. The log searches by sequence; the dead-letter store by id.
 */
export const lowerBound = <T>(items: ReadonlyArray<T>, from: number, target: number, key: (item: T) => number): number => {
  let lo = from
  let hi = items.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (key(items[mid]!) < target) lo = mid + 1
    else hi = mid
  }
  return lo
}

const sequenceOf = (entry: Entry): number => entry.sequence

export const makeMemoryLog = (limits: MemoryLogLimits): MemoryLog => {
  const { discardNew, maxAge, maxBytes, maxMessages, maxMessageSize, stream } = limits
  // The log: live entries in sequence order from `head`; an entry evicted from the middle is flagged `deleted` and
  // dropped when compaction runs, so appends and front evictions stay O(1).
  let log: Array<Entry> = []
  let head = 0
  let deletedInside = 0
  let nextSequence = 1
  const topics = new Map<string, TopicStats>()
  const seen = new Map<string, { readonly sequence: number; readonly time: number }>()
  const seenOrder: Array<{ readonly id: string; readonly time: number }> = []
  let seenHead = 0

  const remove = (entry: Entry): void => {
    entry.deleted = true
    const stats = topics.get(entry.topic)!
    stats.count--
    stats.bytes -= entry.size
    if (log[head] === entry) {
      while (head < log.length && log[head]!.deleted) head++
    } else {
      deletedInside++
    }
    if (head > 4096 && head * 2 > log.length) {
      log = log.slice(head)
      head = 0
    }
    if (deletedInside > 4096 && deletedInside * 2 > log.length - head) {
      log = log.slice(head).filter((e) => !e.deleted)
      head = 0
      deletedInside = 0
    }
  }

  /** Drops the oldest retained message of a topic (from the log too), compacting the topic's list now and then. */
  const dropOldest = (stats: TopicStats): void => {
    const entry = stats.entries[stats.head]!
    stats.entries[stats.head++] = undefined as never
    if (stats.head > 1024 && stats.head * 2 > stats.entries.length) {
      stats.entries.splice(0, stats.head)
      stats.head = 0
    }
    remove(entry)
  }

  const evictTopic = (stats: TopicStats, extraCount: number, extraBytes: number): void => {
    while (stats.count > 0 && (stats.count + extraCount > maxMessages || stats.bytes + extraBytes > maxBytes)) {
      dropOldest(stats)
    }
  }

  const expire = (now: number): void => {
    if (maxAge === Infinity) return
    // The oldest entry of the log is also the oldest of its topic.
    while (head < log.length && log[head]!.time <= now - maxAge) dropOldest(topics.get(log[head]!.topic)!)
  }

  const forgetIds = (now: number): void => {
    while (seenHead < seenOrder.length && seenOrder[seenHead]!.time <= now - limits.duplicateWindow) {
      const old = seenOrder[seenHead++]!
      if (seen.get(old.id)?.time === old.time) seen.delete(old.id)
    }
    if (seenHead > 1024 && seenHead * 2 > seenOrder.length) {
      seenOrder.splice(0, seenHead)
      seenHead = 0
    }
  }

  const tooLarge = (message: OutgoingMessage): PublishError | undefined => {
    const size = message.body.byteLength
    return size > maxMessageSize
      ? new PublishError({
        topic: message.topic,
        reason: "TooLarge",
        retriable: false,
        message: `message for ${message.topic} is ${size} bytes; the largest accepted is ${maxMessageSize} bytes`
      })
      : undefined
  }

  const append = (message: OutgoingMessage, now: number): PublishAck | PublishError => {
    const topic = message.topic
    const size = message.body.byteLength
    const refused = tooLarge(message)
    if (refused !== undefined) return refused
    expire(now)
    forgetIds(now)
    const duplicate = message.dedupe ? seen.get(message.eventId) : undefined
    if (duplicate !== undefined) return { topic, stream, sequence: duplicate.sequence, duplicate: true }
    let stats = topics.get(topic)
    if (stats === undefined) {
      stats = { count: 0, bytes: 0, entries: [], head: 0 }
      topics.set(topic, stats)
    }
    if (stats.count + 1 > maxMessages || stats.bytes + size > maxBytes) {
      if (discardNew) {
        return new PublishError({
          topic,
          reason: "StreamFull",
          retriable: true,
          message:
            `topic ${topic} is full (${stats.count} messages, ${stats.bytes} bytes); retry once consumers catch up or limits are raised`
        })
      }
      evictTopic(stats, 1, size)
    }
    const sequence = nextSequence++
    const entry: Entry = {
      sequence,
      topic,
      body: message.body,
      headers: message.headers,
      eventId: message.eventId,
      publishedAt: new Date(now),
      time: now,
      size,
      deleted: false
    }
    log.push(entry)
    stats.entries.push(entry)
    stats.count++
    stats.bytes += size
    if (message.dedupe) {
      seen.set(message.eventId, { sequence, time: now })
      seenOrder.push({ id: message.eventId, time: now })
    }
    return { topic, stream, sequence, duplicate: false }
  }

  const next = (sequence: number, matches: (topic: string) => boolean): Entry | undefined => {
    for (let i = lowerBound(log, head, sequence, sequenceOf); i < log.length; i++) {
      const candidate = log[i]!
      if (!candidate.deleted && matches(candidate.topic)) return candidate
    }
    return undefined
  }

  const count = (sequence: number, matches: (topic: string) => boolean): number => {
    let found = 0
    for (let i = lowerBound(log, head, sequence, sequenceOf); i < log.length; i++) {
      const entry = log[i]!
      if (!entry.deleted && matches(entry.topic)) found++
    }
    return found
  }

  const startPosition = (
    policy: DeliverPolicy,
    matches: (topic: string) => boolean
  ): { readonly cursor: number; readonly first: ReadonlyArray<Entry> } => {
    const at = (cursor: number) => ({ cursor, first: [] })
    if (policy === "all") return at(0)
    if (policy === "new") return at(nextSequence)
    if (policy === "last") {
      for (let i = log.length - 1; i >= head; i--) {
        const entry = log[i]!
        if (!entry.deleted && matches(entry.topic)) return at(entry.sequence)
      }
      return at(nextSequence)
    }
    if (policy === "lastPerSubject") {
      // A topic's entries leave from its front only (age and size limits), so its last entry is live while it has any.
      const first: Array<Entry> = []
      for (const [topic, stats] of topics) {
        if (stats.count > 0 && matches(topic)) first.push(stats.entries[stats.entries.length - 1]!)
      }
      return { cursor: nextSequence, first: first.sort((a, b) => a.sequence - b.sequence) }
    }
    if ("fromSequence" in policy) return at(policy.fromSequence)
    const time = policy.fromTime.getTime()
    const found = log.slice(head).find((e) => !e.deleted && e.time >= time)
    return at(found === undefined ? nextSequence : found.sequence)
  }

  const messages = (topic: string | undefined): ReadonlyArray<StoredMessage> =>
    log.slice(head).filter((e) => !e.deleted && (topic === undefined || e.topic === topic)).map(
      ({ body, eventId, headers, publishedAt, sequence, topic }): StoredMessage => ({
        sequence,
        topic,
        body,
        headers,
        eventId,
        publishedAt
      })
    )

  return { append, tooLarge, expire, next, count, startPosition, nextSequence: () => nextSequence, messages }
}
