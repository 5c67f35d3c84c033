/**
 * The embedded default backend: a `Transport` that keeps a retained, bounded log in memory and gives it the delivery
 * semantics of JetStream (DESIGN §4) — durable groups that resume after their last ack, competing consumers,
 * redelivery with backoff, dead letters, deliver policies, dedupe by event id, wildcard subscriptions and graceful
 * drain. Tests and single-process services get the real semantics without a broker; the conformance suite holds it
 * to the same contract as NATS.
 *
 * Time comes from Effect's `Clock`, so redelivery delays, `maxAge` and the dedupe window follow a `TestClock`.
 *
 * Members of a group share its work: each message goes to the member with the most room in its in-flight budget (ties
 * in turn), and a member whose budget is used up gets nothing until one of its deliveries settles.
 *
 * Capabilities: `deadLetters`; `consumers` lists every group (or ephemeral subscription) with a live member, with
 * `pending` = retained messages not yet delivered to it, `ackPending` = deliveries running (awaiting their outcome)
 * and `redelivered` = messages waiting to be delivered again (handed back, or failed and waiting for their backoff);
 * `draining` is `true` once the transport is closed or while a group (durable) subscription drains. There is no
 * `connection`.
 *
 * @module
 */
import { Context, Duration, Effect, Fiber, FiberSet, Latch, Layer, type Scope } from "effect"
import { type ConfigError, HealthError, PublishError, SubscribeError } from "./Errors.ts"
import * as Options from "./Options.ts"
import { compilePattern } from "./Topic.ts"
import {
  type ConsumeOptions,
  type ConsumerLag,
  type DeadLetter,
  type Headers,
  type IncomingMessage,
  type Outcome,
  type PublishAck,
  Transport,
  type TransportShape
} from "./Transport.ts"

/**
 * Limits and windows of a memory transport. Limits apply per topic; when one is reached, `discard: "old"` evicts the
 * topic's oldest messages and `discard: "new"` rejects the publish with a retriable `StreamFull` (backpressure).
 *
 * @since 0.1.0
 * @category models
 */
export interface MemoryTransportOptions {
  /** Retained messages per topic (default 100,000). */
  readonly maxMessagesPerTopic?: number
  /** Retained body bytes per topic (default 64 MiB). */
  readonly maxBytesPerTopic?: number
  /** Age after which messages are removed (default: kept until a size limit evicts them). */
  readonly maxAge?: Duration.Input
  /** Largest accepted body, in bytes (default 1 MiB, NATS's default max payload). */
  readonly maxMessageSize?: number
  /** What happens at a limit (default `"old"`). */
  readonly discard?: "old" | "new"
  /** How long an event id is remembered for dedupe (default 2 minutes, like JetStream). */
  readonly duplicateWindow?: Duration.Input
  /** The stream name reported in publish acks (default `"memory"`). */
  readonly stream?: string
}

/**
 * A retained message.
 *
 * @since 0.1.0
 * @category models
 */
export interface StoredMessage {
  readonly sequence: number
  readonly topic: string
  readonly body: Uint8Array
  readonly headers: Headers
  readonly eventId: string
  readonly publishedAt: Date
}

/**
 * The state of a consumer group.
 *
 * @since 0.1.0
 * @category models
 */
export interface GroupInfo {
  readonly name: string
  readonly topic: string
  readonly durable: boolean
  readonly members: number
  /** Messages delivered and not yet acknowledged, dead-lettered or handed back. */
  readonly inFlight: number
  /** Messages waiting for a (re)delivery: handed back or failed and waiting for their backoff. */
  readonly waiting: number
  /** Retained messages not yet delivered to the group. */
  readonly pending: number
}

/**
 * Memory-specific inspection, beside the generic `Transport`.
 *
 * @since 0.1.0
 * @category models
 */
export interface MemoryTransportShape {
  /** Dead letters, oldest first. */
  readonly deadLetters: Effect.Effect<ReadonlyArray<DeadLetter>>
  /** Retained messages, oldest first, optionally of one topic. */
  readonly messages: (topic?: string) => Effect.Effect<ReadonlyArray<StoredMessage>>
  /** The consumer groups, durable and ephemeral. */
  readonly groups: Effect.Effect<ReadonlyArray<GroupInfo>>
}

interface Entry extends StoredMessage {
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

interface Member {
  readonly wake: Latch.Latch
  /** The most deliveries it holds at once (its subscription's `maxInFlight`). */
  readonly capacity: number
  /** Deliveries assigned to it and not settled yet: queued or running. */
  inFlight: number
  /** Deliveries assigned to it that its loop has not started yet. */
  readonly queue: Array<Entry>
  stopping: boolean
}

interface Consumer {
  readonly name: string
  readonly topic: string
  readonly durable: boolean
  readonly matches: (topic: string) => boolean
  /** The next sequence not yet delivered for the first time. */
  cursor: number
  /** Deliveries to make before new messages: handed back, or redeliveries that are due. */
  readonly ready: Array<Entry>
  readonly delayed: Array<{ readonly entry: Entry; readonly due: number }>
  /** Delivery counts of messages not yet acked or dead-lettered. */
  readonly attempts: Map<number, number>
  inFlight: number
  /** The live members, in the order they joined; `turn` is where the next tie is broken. */
  readonly members: Array<Member>
  turn: number
  /** An infrastructure subscription (`ConsumeOptions.internal`): not listed by `consumers`. */
  readonly internal: boolean
}

/** Binary search: the index of the first entry with `seq >= sequence`. */
const lowerBound = (entries: ReadonlyArray<Entry>, from: number, sequence: number): number => {
  let lo = from
  let hi = entries.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (entries[mid]!.sequence < sequence) lo = mid + 1
    else hi = mid
  }
  return lo
}

/** The accepted range of each option (docs/reliability.md, "Options"): NATS's own limits where it has them. */
const checkOptions = (options: unknown): Options.Check =>
  Options.first(() => Options.object("memory", options), () => {
    const o = (options ?? {}) as Record<string, unknown>
    return Options.first(
      () => Options.integer("maxMessagesPerTopic", o.maxMessagesPerTopic, { min: 1, max: Options.MAX_COUNT }),
      () => Options.integer("maxBytesPerTopic", o.maxBytesPerTopic, { min: 1, max: Options.MAX_COUNT }),
      () => Options.duration("maxAge", o.maxAge, { min: "1 millis", max: "36500 days" }),
      // 64 MiB is nats-server's largest max_payload.
      () => Options.integer("maxMessageSize", o.maxMessageSize, { min: 1, max: 64 * 1024 * 1024 }),
      () => Options.oneOf("discard", o.discard, ["old", "new"]),
      () => Options.duration("duplicateWindow", o.duplicateWindow, { min: 0, max: "7 days" }),
      () => Options.name("stream", o.stream)
    )
  })

/**
 * Builds a memory transport; it closes (publishes fail, subscriptions stop) when the scope closes. Fails with
 * `ConfigError` when an option is out of range.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: MemoryTransportOptions = {}
): Effect.Effect<{ readonly transport: TransportShape; readonly memory: MemoryTransportShape }, ConfigError, Scope.Scope> =>
  Effect.gen(function*() {
    const invalid = checkOptions(options)
    if (invalid !== undefined) return yield* Options.toConfigError(invalid)
    const maxMessages = options.maxMessagesPerTopic ?? 100_000
    const maxBytes = options.maxBytesPerTopic ?? 64 * 1024 * 1024
    const maxAge = options.maxAge === undefined ? Infinity : Duration.toMillis(options.maxAge)
    const maxMessageSize = options.maxMessageSize ?? 1024 * 1024
    const discardNew = options.discard === "new"
    const window = Duration.toMillis(options.duplicateWindow ?? "2 minutes")
    const stream = options.stream ?? "memory"

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
    const consumers = new Map<string, Consumer>()
    const deadLetters: Array<DeadLetter> = []
    let closed = false
    let ephemeralIds = 0

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
      while (seenHead < seenOrder.length && seenOrder[seenHead]!.time <= now - window) {
        const old = seenOrder[seenHead++]!
        if (seen.get(old.id)?.time === old.time) seen.delete(old.id)
      }
      if (seenHead > 1024 && seenHead * 2 > seenOrder.length) {
        seenOrder.splice(0, seenHead)
        seenHead = 0
      }
    }

    const publishError = (topic: string, reason: PublishError["reason"], retriable: boolean, message: string) =>
      Effect.fail(new PublishError({ topic, reason, retriable, message }))

    const publish: TransportShape["publish"] = (message) =>
      Effect.clockWith((clock) => {
        const topic = message.topic
        if (closed) return publishError(topic, "Closed", false, `cannot publish to ${topic}: the memory transport is closed`)
        const size = message.body.byteLength
        if (size > maxMessageSize) {
          return publishError(topic, "TooLarge", false,
            `message for ${topic} is ${size} bytes; the largest accepted is ${maxMessageSize} bytes`)
        }
        const now = clock.currentTimeMillisUnsafe()
        expire(now)
        forgetIds(now)
        const duplicate = message.dedupe ? seen.get(message.eventId) : undefined
        if (duplicate !== undefined) {
          return Effect.succeed<PublishAck>({ topic, stream, sequence: duplicate.sequence, duplicate: true })
        }
        let stats = topics.get(topic)
        if (stats === undefined) {
          stats = { count: 0, bytes: 0, entries: [], head: 0 }
          topics.set(topic, stats)
        }
        if (stats.count + 1 > maxMessages || stats.bytes + size > maxBytes) {
          if (discardNew) {
            return publishError(topic, "StreamFull", true,
              `topic ${topic} is full (${stats.count} messages, ${stats.bytes} bytes); retry once consumers catch up or limits are raised`)
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
        for (const consumer of consumers.values()) {
          if (consumer.matches(topic)) dispatch(consumer, undefined)
        }
        return Effect.succeed<PublishAck>({ topic, stream, sequence, duplicate: false })
      })

    /**
     * The next delivery for a consumer, or `undefined`; updates the cursor and the delivery count. Without `now` (a
     * publish, whose fiber may run on another clock than the consumer's) it leaves due redeliveries to the members'
     * timers and takes what is already waiting or new.
     */
    const take = (consumer: Consumer, now: number | undefined): Entry | undefined => {
      if (now !== undefined && consumer.delayed.length > 0) {
        for (let i = 0; i < consumer.delayed.length;) {
          const item = consumer.delayed[i]!
          if (item.due <= now) {
            consumer.ready.push(item.entry)
            consumer.delayed.splice(i, 1)
          } else i++
        }
      }
      let entry = consumer.ready.shift()
      if (entry === undefined) {
        if (now !== undefined) expire(now)
        for (let i = lowerBound(log, head, consumer.cursor); i < log.length; i++) {
          const candidate = log[i]!
          if (!candidate.deleted && consumer.matches(candidate.topic)) {
            entry = candidate
            break
          }
        }
        consumer.cursor = entry === undefined ? nextSequence : entry.sequence + 1
        if (entry === undefined) return undefined
      }
      consumer.attempts.set(entry.sequence, (consumer.attempts.get(entry.sequence) ?? 0) + 1)
      consumer.inFlight++
      return entry
    }

    /**
     * Hands out the consumer's next deliveries, one at a time, each to the member with the smallest share of its budget
     * in use (ties go round the members in turn), until nothing is left to deliver or every member is full or stopping.
     * Deciding here, and not in each member's own pull loop, is what makes members share: a loop that took whatever
     * was there would take everything whenever its handlers finish before another member's loop gets to run (issue 10).
     */
    const dispatch = (consumer: Consumer, now: number | undefined): void => {
      const members = consumer.members
      for (;;) {
        let chosen: Member | undefined
        let at = 0
        // Read afresh each time: waking a member runs its loop at once, and that may change the members.
        for (let i = 0; i < members.length; i++) {
          const index = (consumer.turn + i) % members.length
          const member = members[index]!
          if (member.stopping || member.inFlight >= member.capacity) continue
          // inFlight / capacity compared without division; a strict `<` keeps the first in turn among equals.
          if (chosen === undefined || member.inFlight * chosen.capacity < chosen.inFlight * member.capacity) {
            chosen = member
            at = index
          }
        }
        if (chosen === undefined) return
        const entry = take(consumer, now)
        if (entry === undefined) return
        chosen.inFlight++
        chosen.queue.push(entry)
        consumer.turn = at + 1
        // Opening the latch may resume the member's loop right here (Effect can run a resumed fiber synchronously).
        chosen.wake.openUnsafe()
      }
    }

    /**
     * Takes back what a stopping member was assigned but never started, as if it had not been delivered (the delivery
     * count is restored), so another member gets it at once and before newer messages.
     */
    const unassign = (consumer: Consumer, member: Member): void => {
      for (const entry of member.queue) {
        member.inFlight--
        consumer.inFlight--
        const count = (consumer.attempts.get(entry.sequence) ?? 1) - 1
        if (count > 0) consumer.attempts.set(entry.sequence, count)
        else consumer.attempts.delete(entry.sequence)
        requeue(consumer, entry)
      }
      member.queue.length = 0
    }

    /** Puts a message back among the waiting deliveries in sequence order, so a group resumes in publish order. */
    const requeue = (consumer: Consumer, entry: Entry): void => {
      const at = consumer.ready.findIndex((waiting) => waiting.sequence > entry.sequence)
      consumer.ready.splice(at === -1 ? consumer.ready.length : at, 0, entry)
    }

    const nextDue = (consumer: Consumer): number => {
      let due = Infinity
      for (const item of consumer.delayed) due = Math.min(due, item.due)
      return due
    }

    const settle = (consumer: Consumer, entry: Entry, outcome: Outcome, group: string | undefined, now: number): void => {
      consumer.inFlight--
      switch (outcome._tag) {
        case "Ack":
          consumer.attempts.delete(entry.sequence)
          return
        case "Nak":
          consumer.delayed.push({ entry, due: now + Duration.toMillis(outcome.delay) })
          // Every member with room sets its timer to the new due time, so whichever is free then delivers it. A copy:
          // a woken loop runs at once and may end a member.
          for (const member of consumer.members.slice()) member.wake.openUnsafe()
          return
        case "Handback":
          requeue(consumer, entry)
          return
        case "DeadLetter":
          deadLetters.push({
            subject: entry.topic,
            body: entry.body,
            headers: entry.headers,
            reason: outcome.reason,
            errorTag: outcome.errorTag,
            deliveryCount: Math.max(outcome.attempts, consumer.attempts.get(entry.sequence) ?? 1),
            sequence: entry.sequence,
            group,
            deadLetteredAt: new Date(now)
          })
          consumer.attempts.delete(entry.sequence)
          return
      }
    }

    const startPosition = (policy: ConsumeOptions["deliverPolicy"]): number => {
      if (policy === "all") return 0
      if (policy === "new") return nextSequence
      if ("fromSequence" in policy) return policy.fromSequence
      const time = policy.fromTime.getTime()
      const found = log.slice(head).find((e) => !e.deleted && e.time >= time)
      return found === undefined ? nextSequence : found.sequence
    }

    const consume: TransportShape["consume"] = (options, process) =>
      Effect.gen(function*() {
        const { group, topic } = options
        const fail = (reason: SubscribeError["reason"], message: string) =>
          new SubscribeError({ topic, group, reason, message })
        if (closed) return yield* fail("Closed", `cannot subscribe to ${topic}: the memory transport is closed`)
        let consumer = group === undefined ? undefined : consumers.get(group)
        if (consumer !== undefined && consumer.topic !== topic) {
          return yield* fail("GroupConflict",
            `group ${group} already consumes ${consumer.topic}; one group cannot also consume ${topic}`)
        }
        if (consumer === undefined) {
          const name = group ?? `~ephemeral-${++ephemeralIds}`
          consumer = {
            name,
            topic,
            durable: group !== undefined,
            matches: compilePattern(topic),
            cursor: startPosition(options.deliverPolicy),
            ready: [],
            delayed: [],
            attempts: new Map(),
            inFlight: 0,
            members: [],
            turn: 0,
            internal: options.internal === true
          }
          consumers.set(name, consumer)
        }
        const self = consumer
        const member: Member = {
          wake: Latch.makeUnsafe(false),
          capacity: options.maxInFlight,
          inFlight: 0,
          queue: [],
          stopping: false
        }
        self.members.push(member)
        const fibers = yield* FiberSet.make<unknown, never>()
        const clock = yield* Effect.clockWith(Effect.succeed)

        const deliver = (entry: Entry): IncomingMessage => ({
          subject: entry.topic,
          body: entry.body,
          headers: entry.headers,
          deliveryCount: self.attempts.get(entry.sequence) ?? 1,
          sequence: entry.sequence,
          publishedAt: entry.publishedAt
        })

        const run = (entry: Entry) =>
          FiberSet.run(fibers)(
            process(deliver(entry)).pipe(
              Effect.onExit((exit) =>
                Effect.sync(() => {
                  const now = clock.currentTimeMillisUnsafe()
                  member.inFlight--
                  settle(self, entry, exit._tag === "Success" ? exit.value : { _tag: "Handback" }, group, now)
                  dispatch(self, now)
                  // Its loop looks again at the next due redelivery, now that it has room for it.
                  member.wake.openUnsafe()
                })
              )
            )
          )

        // The member's loop: hand out what is due (to whichever members have room), start what this member was
        // assigned, then sleep until an assignment, a settled delivery or the next due redelivery wakes it. What is
        // assigned and not started when it stops goes back to the group (see the finalizer), so nothing is left behind.
        const loop = Effect.gen(function*() {
          while (!member.stopping && !closed) {
            member.wake.closeUnsafe()
            const now = clock.currentTimeMillisUnsafe()
            dispatch(self, now)
            if (member.queue.length > 0) {
              // At most what is queued now, then a yield: handlers that settle at once refill the queue, and a long
              // backlog must not keep the other fibers (and a closing scope) waiting.
              for (let n = member.queue.length; n > 0 && !member.stopping; n--) {
                const entry = member.queue.shift()
                if (entry === undefined) break
                yield* run(entry)
              }
              yield* Effect.yieldNow
              continue
            }
            const due = member.inFlight < member.capacity ? nextDue(self) : Infinity
            const wait = member.wake.await
            yield* due === Infinity
              ? Effect.interruptible(wait)
              : Effect.interruptible(Effect.raceFirst(wait, Effect.sleep(Math.max(0, due - now))))
          }
        }).pipe(Effect.uninterruptible)

        // Forked into the consumer's scope, not as a child of this fiber: a subscription made while building a layer
        // must outlive the fiber that built it (a child would be interrupted as soon as that fiber finished).
        const loopFiber = yield* Effect.forkScoped(loop)
        yield* Effect.addFinalizer(() =>
          Effect.gen(function*() {
            member.stopping = true
            member.wake.openUnsafe()
            yield* Fiber.await(loopFiber)
            unassign(self, member)
            dispatch(self, clock.currentTimeMillisUnsafe())
            if (member.inFlight > 0 && Duration.toMillis(options.drainTimeout) > 0) {
              yield* Effect.timeoutOption(FiberSet.awaitEmpty(fibers), options.drainTimeout)
            }
            yield* FiberSet.clear(fibers)
            const at = self.members.indexOf(member)
            self.members.splice(at, 1)
            if (self.turn > at) self.turn--
            if (self.members.length === 0 && !self.durable) consumers.delete(self.name)
            else dispatch(self, clock.currentTimeMillisUnsafe())
          })
        )
      })

    /** Retained messages the consumer has not taken yet (its cursor is past everything it took the first time). */
    const pendingOf = (consumer: Consumer): number => {
      let count = 0
      for (let i = lowerBound(log, head, consumer.cursor); i < log.length; i++) {
        const entry = log[i]!
        if (!entry.deleted && consumer.matches(entry.topic)) count++
      }
      return count
    }

    const isDraining = (consumer: Consumer): boolean => {
      for (const member of consumer.members) if (member.stopping) return true
      return false
    }

    const transport: TransportShape = {
      name: "memory",
      publish,
      consume,
      check: Effect.suspend(() =>
        closed ? Effect.fail(new HealthError({ component: "transport", message: "the memory transport is closed" })) : Effect.void
      ),
      deadLetters: Effect.sync(() => deadLetters.slice()),
      // Live consumers only (at least one member): a durable group nobody consumes right now is not this process's
      // backlog. The clock is read so `pending` leaves out what `maxAge` has expired, as a publish would.
      consumers: Effect.clockWith((clock) =>
        Effect.sync(() => {
          expire(clock.currentTimeMillisUnsafe())
          const lags: Array<ConsumerLag> = []
          for (const c of consumers.values()) {
            if (c.members.length === 0 || c.internal) continue
            lags.push({
              topic: c.topic,
              group: c.durable ? c.name : undefined,
              consumer: c.name,
              pending: pendingOf(c),
              ackPending: c.inFlight,
              redelivered: c.ready.length + c.delayed.length,
              draining: isDraining(c)
            })
          }
          return lags
        })
      ),
      draining: Effect.sync(() => {
        if (closed) return true
        for (const c of consumers.values()) if (c.durable && isDraining(c)) return true
        return false
      })
    }

    const memory: MemoryTransportShape = {
      deadLetters: transport.deadLetters!,
      messages: (topic) =>
        Effect.clockWith((clock) =>
          Effect.sync(() => {
            expire(clock.currentTimeMillisUnsafe())
            return log.slice(head).filter((e) => !e.deleted && (topic === undefined || e.topic === topic)).map(
              ({ body, eventId, headers, publishedAt, sequence, topic }): StoredMessage => ({
                sequence,
                topic,
                body,
                headers,
                eventId,
                publishedAt
              })
            )
          })
        ),
      groups: Effect.sync(() =>
        [...consumers.values()].map((c): GroupInfo => ({
          name: c.name,
          topic: c.topic,
          durable: c.durable,
          members: c.members.length,
          inFlight: c.inFlight,
          waiting: c.ready.length + c.delayed.length,
          pending: pendingOf(c)
        }))
      )
    }

    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        closed = true
        for (const consumer of consumers.values()) {
          for (const member of consumer.members) {
            member.stopping = true
            member.wake.openUnsafe()
          }
        }
      })
    )
    return { transport, memory }
  })

// An explicitly typed base instead of `class extends Context.Service<...>()(...)` (JSR, DESIGN §6).
const MemoryTransportKey: Context.ServiceClass<MemoryTransport, "@cqbus/core/MemoryTransport", MemoryTransportShape> =
  Context.Service<MemoryTransport, MemoryTransportShape>()("@cqbus/core/MemoryTransport")

/**
 * The memory transport's own service (dead letters, retained messages, groups). `MemoryTransport.layer` provides it
 * together with the generic `Transport`.
 *
 * @since 0.1.0
 * @category services
 */
export class MemoryTransport extends MemoryTransportKey {
  /**
   * A fresh memory transport as `Transport` and `MemoryTransport`.
   *
   * @since 0.1.0
   * @category layers
   */
  static layer(options: MemoryTransportOptions = {}): Layer.Layer<Transport | MemoryTransport, ConfigError> {
    return Layer.effectContext(
      Effect.map(make(options), ({ memory, transport }) =>
        Context.make(Transport, transport).pipe(Context.add(MemoryTransport, memory)))
    )
  }
}
