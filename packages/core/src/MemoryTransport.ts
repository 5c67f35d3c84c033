/**
 * The embedded default backend: a `Transport` over a retained, bounded in-memory log (`internal/memoryLog.ts`) with
 * the delivery semantics of JetStream (DESIGN §4), so tests and single-process services get the real semantics
 * without a broker; the conformance suite holds it to the same contract as NATS. This module holds the consumers:
 * durable groups and ephemeral subscriptions, their cursors into the log, redelivery and dead letters (docs/semantics.md,
 * "What the memory transport retains"). Time comes from Effect's `Clock`, so a `TestClock` drives redelivery
 * delays, `maxAge` and the dedupe window.
 *
 * Members of a group share its work: each message goes to the member with the most room in its in-flight budget (ties
 * in turn), and a member whose budget is used up gets nothing until one of its deliveries settles.
 *
 * Per-topic persistence (`topics`, `internal/memoryTopics.ts`): a publish on an ephemeral topic is not stored; it goes
 * to the live subscriptions of that topic (`internal/memoryLive.ts`: made while the topic was ephemeral), which are
 * consumers too, fed by publishes instead of the log, and share the same members, loops and drain.
 *
 * @module
 */
import { Context, Duration, Effect, Fiber, FiberSet, Latch, Layer, type Scope } from "effect"
import { type ConfigError, HealthError, PublishError, SubscribeError } from "./Errors.ts"
import { makeMemoryDeadLetters } from "./internal/memoryDeadLetters.ts"
import { deadLetterOf, INTERRUPTED, liveEntry, refusal, unprocessed } from "./internal/memoryLive.ts"
import { type Entry, makeMemoryLog, type StoredMessage } from "./internal/memoryLog.ts"
import { makeMemoryTopics } from "./internal/memoryTopics.ts"
import { deadLetterRecord, incomingOf } from "./internal/memoryDelivery.ts"
import { makeMemoryFetch } from "./internal/memoryFetch.ts"
import * as Options from "./Options.ts"
import { compilePattern } from "./Topic.ts"
import * as TopicConfig from "./TopicConfig.ts"
import type { Persistence, TopicRegistry } from "./TopicConfig.ts"
import {
  type ConsumerLag,
  type DeadLetter,
  type IncomingMessage,
  type Outcome,
  type OutgoingMessage,
  type PublishDepth,
  Transport,
  type TransportShape
} from "./Transport.ts"

export type { StoredMessage } from "./internal/memoryLog.ts"

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
  /**
   * The persistence of topics not configured otherwise (`topics`, `EventBusConfig.topics`): `"persistent"` (the
   * default) or `"auto"` store them; `"ephemeral"` hands each publish to the live subscriptions of its topic only.
   */
  readonly persistence?: Persistence
}

/**
 * The memory transport: the `Transport` (with its `deadLetters`, `consumers`, `draining` and `publishing`
 * capabilities, always present here) plus what only an in-memory log can show.
 *
 * @since 0.1.0
 * @category models
 */
export interface MemoryTransportShape extends TransportShape {
  readonly deadLetters: Effect.Effect<ReadonlyArray<DeadLetter>>
  readonly consumers: Effect.Effect<ReadonlyArray<ConsumerLag>, HealthError>
  readonly draining: Effect.Effect<boolean>
  readonly publishing: Effect.Effect<PublishDepth>
  /** Per-topic persistence: never refuses a configure, as the memory log can store any topic (`"auto"` = persistent). */
  readonly topics: TopicRegistry
  /** Retained messages, oldest first, optionally of one topic. */
  readonly messages: (topic?: string) => Effect.Effect<ReadonlyArray<StoredMessage>>
  /**
   * Every consumer, durable or ephemeral, with or without live members, infrastructure ones included (`consumers`
   * lists only the live application ones), each with `members` set. Ephemeral consumers are named `~ephemeral-N`, the
   * live subscriptions of ephemeral topics `~live-N` (`pending`: received and not started yet; nothing is stored).
   */
  readonly groups: Effect.Effect<ReadonlyArray<ConsumerLag>>
}

interface Member {
  readonly wake: Latch.Latch
  /** The most deliveries it holds at once (its subscription's `maxInFlight`). */
  readonly capacity: number
  /** Deliveries assigned to it and not settled yet: queued or running. */
  inFlight: number
  /** Deliveries assigned to it that its loop has not started yet. */
  readonly queue: Array<Entry>
  /** Takes nothing more: its subscription is closing (or the transport is). */
  stopping: boolean
  /**
   * The last member of a live subscription, closing: it still runs what the subscription received before it closed
   * (nothing else would, and nothing is stored to redeliver it), within `drainTimeout`.
   */
  finishing: boolean
}

interface Consumer {
  readonly name: string
  /** Its key in the transport's map: the group of a durable consumer; live groups are per topic, like queue groups. */
  readonly key: string
  readonly topic: string
  readonly group: string | undefined
  readonly durable: boolean
  /**
   * A live subscription of an ephemeral topic: fed by publishes on its topic (into `ready`), never by the log; each
   * delivery is its first and last (no attempts counted, no redelivery, outcomes other than `Ack` dead-lettered).
   */
  readonly live: boolean
  readonly matches: (topic: string) => boolean
  /** The next sequence not yet delivered for the first time. */
  cursor: number
  /**
   * Deliveries to make before new messages: handed back, or redeliveries that are due; for a live subscription, what
   * it received and has not handed to a member yet (every member's budget is in use).
   */
  readonly ready: Array<Entry>
  /**
   * First deliveries to make before the cursor's (`"lastPerSubject"`: the latest of each subject), as a stack: the
   * oldest is last, so taking it is a `pop`, not a `shift` that moves every other entry (one per subject).
   */
  readonly first: Array<Entry>
  readonly delayed: Array<{ readonly entry: Entry; readonly due: number }>
  /** Delivery counts of messages not yet acked or dead-lettered. */
  readonly attempts: Map<number, number>
  inFlight: number
  /**
   * When each running delivery started, by sequence, on the consumer's clock, for `ConsumerLag.oldestUnackedAge`. A
   * map: a consumer holds a message once at a time, and a settle must not scan or shift an array.
   */
  readonly held: Map<number, number>
  /** The live members, in the order they joined; `turn` is where the next tie is broken. */
  readonly members: Array<Member>
  turn: number
  /** An infrastructure subscription (`ConsumeOptions.internal`): not listed by `consumers`. */
  readonly internal: boolean
  /** The most deliveries the consumer holds unsettled (`ConsumeOptions.maxAckPending`; `Infinity` without one). */
  readonly maxAckPending: number
  /** `ConsumeOptions.ackPolicy` `"none"`: every outcome settles the message; one other than `Ack` is logged. */
  readonly ackNone: boolean
  /** With `replay: "original"`, the pace of the first deliveries of what was retained when the consumer was created. */
  readonly replay: Replay | undefined
}

/** Replay at the original rate (`ConsumeOptions.replay`), as nats-server does it: each message waits after the previous
 * one as long as it was stored after it, until the consumer reaches what was published after it was created. */
interface Replay {
  /** The first sequence published after the consumer was created: delivered as it comes. */
  readonly until: number
  /** The stored time of the last message delivered at pace, and when (Clock time) it was delivered. */
  lastStored: number | undefined
  lastDelivered: number
  /** When the next paced message is due (`Infinity`: nothing waits). */
  due: number
}


/** The accepted range of each option (docs/reliability.md, "Options"): NATS's own limits where it has them. */
const checkOptions = (options: unknown): Options.Check =>
  Options.fields("memory", options, (o) =>
    Options.first(
      () => Options.integer("maxMessagesPerTopic", o.maxMessagesPerTopic, { min: 1, max: Options.MAX_COUNT }),
      () => Options.integer("maxBytesPerTopic", o.maxBytesPerTopic, { min: 1, max: Options.MAX_COUNT }),
      () => Options.duration("maxAge", o.maxAge, { min: "1 millis", max: "36500 days" }),
      // 64 MiB is nats-server's largest max_payload.
      () => Options.integer("maxMessageSize", o.maxMessageSize, { min: 1, max: 64 * 1024 * 1024 }),
      () => Options.oneOf("discard", o.discard, ["old", "new"]),
      () => Options.duration("duplicateWindow", o.duplicateWindow, { min: 0, max: "7 days" }),
      () => Options.name("stream", o.stream),
      () => Options.oneOf("persistence", o.persistence, TopicConfig.PERSISTENCE)
    )
  )

/**
 * Builds a memory transport; it closes (publishes fail, subscriptions stop) when the scope closes. Fails with
 * `ConfigError` when an option is out of range.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: MemoryTransportOptions = {}): Effect.Effect<MemoryTransportShape, ConfigError, Scope.Scope> =>
  Effect.gen(function*() {
    const invalid = checkOptions(options)
    if (invalid !== undefined) return yield* Options.toConfigError(invalid)
    const log = makeMemoryLog({
      maxMessages: options.maxMessagesPerTopic ?? 100_000,
      maxBytes: options.maxBytesPerTopic ?? 64 * 1024 * 1024,
      maxAge: options.maxAge === undefined ? Infinity : Duration.toMillis(options.maxAge),
      maxMessageSize: options.maxMessageSize ?? 1024 * 1024,
      discardNew: options.discard === "new",
      duplicateWindow: Duration.toMillis(options.duplicateWindow ?? "2 minutes"),
      stream: options.stream ?? "memory"
    })
    const topics = makeMemoryTopics(options.persistence ?? "persistent", options.stream ?? "memory")
    const consumers = new Map<string, Consumer>()
    const deadLetters = makeMemoryDeadLetters()
    let closed = false
    let ephemeralIds = 0
    let liveIds = 0
    const fetcher = makeMemoryFetch({ log, bury: deadLetters.add, isClosed: () => closed })

    const publish: TransportShape["publish"] = (message) =>
      Effect.clockWith((clock) => {
        const topic = message.topic
        if (closed) {
          return Effect.fail(
            new PublishError({
              topic,
              reason: "Closed",
              retriable: false,
              message: `cannot publish to ${topic}: the memory transport is closed`
            })
          )
        }
        const now = clock.currentTimeMillisUnsafe()
        if (topics.isEphemeral(topic)) {
          const refused = log.tooLarge(message)
          if (refused !== undefined) return Effect.fail(refused)
          fanOut(message, now, false)
          return Effect.succeed({ topic, stream: "", sequence: 0, duplicate: false, ephemeral: true })
        }
        const ack = log.append(message, now)
        if (ack instanceof PublishError) return Effect.fail(ack)
        if (!ack.duplicate) {
          fetcher.stored()
          fanOut(message, now, true)
        }
        return Effect.succeed(ack)
      })

    /**
     * Hands a publish to the consumers it reaches: when the log `stored` it, the log consumers whose pattern matches
     * (they read it from the log); in any case the live subscriptions of its exact topic that still listen (a closing
     * one has stopped receiving), into their `ready`. A live subscription receives the stored publishes on its topic
     * too, as a core-NATS subscription receives JetStream publishes on its subject: once, as the log stored it once.
     */
    const fanOut = (message: OutgoingMessage, now: number, stored: boolean): void => {
      let entry: Entry | undefined
      for (const consumer of consumers.values()) {
        if (!consumer.live) {
          if (stored && consumer.matches(message.topic)) dispatch(consumer, undefined)
          continue
        }
        if (consumer.topic !== message.topic || !listening(consumer)) continue
        entry ??= liveEntry(message, ++liveIds, now)
        consumer.ready.push(entry)
        dispatch(consumer, undefined)
      }
    }

    const listening = (consumer: Consumer): boolean => {
      for (const member of consumer.members) if (!member.stopping) return true
      return false
    }

    /**
     * The next delivery for a consumer, or `undefined`; updates the cursor and the delivery count. Without `now` (a
     * publish, whose fiber may run on another clock than the consumer's) it leaves due redeliveries to the members'
     * timers and takes what is already waiting or new.
     */
    const take = (consumer: Consumer, now: number | undefined): Entry | undefined => {
      if (consumer.inFlight >= consumer.maxAckPending) return undefined
      if (consumer.live) {
        const received = consumer.ready.shift()
        if (received !== undefined) consumer.inFlight++
        return received
      }
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
        if (now !== undefined) log.expire(now)
        // What the start position picked and not yet delivered comes first, unless a limit has removed it meanwhile.
        while (consumer.first.length > 0 && consumer.first[consumer.first.length - 1]!.deleted) consumer.first.pop()
        const picked = consumer.first[consumer.first.length - 1]
        entry = picked ?? log.next(consumer.cursor, consumer.matches)
        const replay = consumer.replay
        if (entry !== undefined && replay !== undefined && entry.sequence < replay.until) {
          // Paced by the members' timers, which read the consumer's clock; a publish only leaves it to them.
          if (now === undefined) return undefined
          const due = replay.lastStored === undefined ? now : replay.lastDelivered + (entry.time - replay.lastStored)
          if (due > now) {
            replay.due = due
            return undefined
          }
          replay.lastStored = entry.time
          replay.lastDelivered = now
          replay.due = Infinity
        }
        if (picked !== undefined) consumer.first.pop()
        else consumer.cursor = entry === undefined ? log.nextSequence() : entry.sequence + 1
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
          if ((member.stopping && !member.finishing) || member.inFlight >= member.capacity) continue
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
      let due = consumer.replay?.due ?? Infinity
      for (const item of consumer.delayed) due = Math.min(due, item.due)
      return due
    }

    const bury = (
      consumer: Consumer,
      entry: Entry,
      letter: { readonly reason: string; readonly errorTag: string },
      deliveryCount: number,
      now: number
    ): void => {
      deadLetters.add(
        deadLetterRecord(entry, letter, deliveryCount, consumer.live ? undefined : entry.sequence, consumer.group, now)
      )
    }

    const settle = (consumer: Consumer, entry: Entry, outcome: Outcome, now: number): void => {
      consumer.inFlight--
      if (consumer.live) {
        // Nothing to redeliver from: every outcome settles the message, and only Ack leaves no dead letter — also under
        // ackPolicy "none", as on NATS (docs/semantics.md: on an ephemeral topic every outcome but Ack is dead-lettered).
        const letter = deadLetterOf(consumer.topic, outcome)
        if (letter !== undefined) bury(consumer, entry, letter, 1, now)
        return
      }
      if (consumer.ackNone) {
        // Nothing waits for an answer: the message is done, whatever the outcome (the caller logs one other than Ack).
        consumer.attempts.delete(entry.sequence)
        return
      }
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
          bury(consumer, entry, outcome, Math.max(outcome.attempts, consumer.attempts.get(entry.sequence) ?? 1), now)
          consumer.attempts.delete(entry.sequence)
          return
      }
    }

    const consume: TransportShape["consume"] = (options, process) =>
      Effect.gen(function*() {
        const { group, topic } = options
        const fail = (reason: SubscribeError["reason"], message: string) =>
          new SubscribeError({ topic, group, reason, message })
        if (closed) return yield* fail("Closed", `cannot subscribe to ${topic}: the memory transport is closed`)
        const matches = compilePattern(topic)
        // A pattern reads the log only: what is ephemeral is never in it. The topic's persistence now decides for good.
        const live = !isPattern(topic) && topics.isEphemeral(topic)
        if (live) {
          const refused = refusal(topic, options)
          if (refused !== undefined) return yield* fail("InvalidOptions", refused)
        }
        // A live group is a queue group of its topic (as on core NATS), apart from any durable group of that name.
        const key = group === undefined ? undefined : live ? `~live ${topic} ${group}` : group
        let consumer = key === undefined ? undefined : consumers.get(key)
        if (consumer !== undefined && consumer.topic !== topic) {
          return yield* fail("GroupConflict",
            `group ${group} already consumes ${consumer.topic}; one group cannot also consume ${topic}`)
        }
        if (consumer === undefined) {
          const name = live ? `~live-${++liveIds}` : group ?? `~ephemeral-${++ephemeralIds}`
          const start = live ? { cursor: 0, first: [] } : log.startPosition(options.deliverPolicy, matches)
          consumer = {
            name,
            key: key ?? name,
            topic,
            group,
            durable: group !== undefined && !live,
            live,
            matches,
            cursor: start.cursor,
            ready: [],
            first: start.first.slice().reverse(),
            delayed: [],
            attempts: new Map(),
            inFlight: 0,
            held: new Map(),
            members: [],
            turn: 0,
            internal: options.internal === true,
            // A live subscription has no acks to wait for: `maxInFlight` alone bounds it, as on core NATS.
            maxAckPending: live ? Infinity : options.maxAckPending ?? Infinity,
            ackNone: options.ackPolicy === "none",
            replay: options.replay === "original"
              ? { until: log.nextSequence(), lastStored: undefined, lastDelivered: 0, due: Infinity }
              : undefined
          }
          consumers.set(consumer.key, consumer)
        }
        const self = consumer
        const member: Member = {
          wake: Latch.makeUnsafe(false),
          capacity: options.maxInFlight,
          inFlight: 0,
          queue: [],
          stopping: false,
          finishing: false
        }
        self.members.push(member)
        const fibers = yield* FiberSet.make<unknown, never>()
        const clock = yield* Effect.clockWith(Effect.succeed)

        const deliver = (entry: Entry): IncomingMessage =>
          // A live (ephemeral) subscription has nothing to deliver again from.
          incomingOf(entry, self.attempts.get(entry.sequence) ?? 1, self.live)

        const run = (entry: Entry) => {
          self.held.set(entry.sequence, clock.currentTimeMillisUnsafe())
          return FiberSet.run(fibers)(
            process(deliver(entry)).pipe(
              Effect.onExit((exit) =>
                Effect.suspend(() => {
                  const now = clock.currentTimeMillisUnsafe()
                  const outcome: Outcome = exit._tag === "Success" ? exit.value : { _tag: "Handback" }
                  self.held.delete(entry.sequence)
                  member.inFlight--
                  settle(self, entry, outcome, now)
                  dispatch(self, now)
                  // Its loop looks again at the next due redelivery, now that it has room for it.
                  member.wake.openUnsafe()
                  return self.ackNone && outcome._tag !== "Ack" ? logUnacknowledged(topic, group, entry.topic, outcome) : Effect.void
                })
              )
            )
          )
        }

        // The member's loop: hand out what is due (to whichever members have room), start what this member was
        // assigned, then sleep until an assignment, a settled delivery or the next due redelivery wakes it. What is
        // assigned and not started when it stops goes back to the group (see the finalizer), so nothing is left behind.
        // A finishing member (the last of a closing live subscription) goes on until it has started all it received.
        const loop = Effect.gen(function*() {
          while ((!member.stopping || member.finishing) && !closed) {
            member.wake.closeUnsafe()
            const now = clock.currentTimeMillisUnsafe()
            dispatch(self, now)
            if (member.finishing && member.queue.length === 0 && self.ready.length === 0) break
            if (member.queue.length > 0) {
              // At most what is queued now, then a yield: handlers that settle at once refill the queue, and a long
              // backlog must not keep the other fibers (and a closing scope) waiting.
              for (let n = member.queue.length; n > 0 && (!member.stopping || member.finishing); n--) {
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
            // The last member of a live subscription: what it received is nowhere else, so it runs it first.
            member.finishing = self.live && !listening(self)
            member.wake.openUnsafe()
            const budget = Duration.toMillis(options.drainTimeout) > 0
            // The finishing member's budget covers the received messages and the running handlers both: once spent,
            // the handlers still running are interrupted at once.
            const spent = member.finishing
            if (member.finishing) {
              if (budget) {
                yield* Effect.timeoutOption(Effect.andThen(Fiber.await(loopFiber), FiberSet.awaitEmpty(fibers)),
                  options.drainTimeout)
              }
              member.finishing = false
              member.wake.openUnsafe()
            }
            yield* Fiber.await(loopFiber)
            unassign(self, member)
            dispatch(self, clock.currentTimeMillisUnsafe())
            if (member.inFlight > 0 && budget && !spent) {
              yield* Effect.timeoutOption(FiberSet.awaitEmpty(fibers), options.drainTimeout)
            }
            yield* FiberSet.clear(fibers)
            const at = self.members.indexOf(member)
            self.members.splice(at, 1)
            if (self.turn > at) self.turn--
            if (self.members.length === 0 && !self.durable) {
              consumers.delete(self.key)
              if (self.live) abandon(self, clock.currentTimeMillisUnsafe())
            } else dispatch(self, clock.currentTimeMillisUnsafe())
          })
        )
      })

    /**
     * Dead-letters what a live subscription received and no member started before the last one left: nothing is
     * stored to hand it back to.
     */
    const abandon = (consumer: Consumer, now: number): void => {
      const letter = { reason: unprocessed(consumer.topic), errorTag: INTERRUPTED }
      for (const entry of consumer.ready.splice(0)) bury(consumer, entry, letter, 1, now)
    }

    /**
     * Retained messages the consumer has not taken yet (its cursor is past everything it took the first time); for a
     * live subscription, what it received and has not started yet (as a core-NATS subscription's buffered messages).
     */
    const pendingOf = (consumer: Consumer): number =>
      consumer.live
        ? consumer.ready.length + consumer.inFlight - consumer.held.size
        : log.count(consumer.cursor, consumer.matches) + consumer.first.filter((entry) => !entry.deleted).length

    const isDraining = (consumer: Consumer): boolean => {
      for (const member of consumer.members) if (member.stopping) return true
      return false
    }

    const oldestOf = (c: Consumer, now: number): Duration.Duration => {
      let oldest = now
      for (const started of c.held.values()) if (started < oldest) oldest = started
      return Duration.millis(now - oldest)
    }

    // A live subscription has nothing stored: `pending` is what it received and has not started, `ackPending` what runs.
    const lagOf = (c: Consumer, now: number): ConsumerLag => ({
      topic: c.topic,
      group: c.group,
      consumer: c.name,
      pending: pendingOf(c),
      ackPending: c.live ? c.held.size : c.inFlight,
      redelivered: c.live ? 0 : c.ready.length + c.delayed.length,
      draining: isDraining(c),
      oldestUnackedAge: oldestOf(c, now)
    })

    const transport: MemoryTransportShape = {
      name: "memory",
      publish,
      consume,
      check: Effect.suspend(() =>
        closed ? Effect.fail(new HealthError({ component: "transport", message: "the memory transport is closed" })) : Effect.void
      ),
      deadLetters: Effect.sync(deadLetters.all),
      deadLetterStore: deadLetters.store,
      // Live consumers only (at least one member): a durable group nobody consumes right now is not this process's
      // backlog. The clock is read so `pending` leaves out what `maxAge` has expired, as a publish would.
      consumers: Effect.clockWith((clock) =>
        Effect.sync(() => {
          const now = clock.currentTimeMillisUnsafe()
          log.expire(now)
          const lags: Array<ConsumerLag> = []
          for (const c of consumers.values()) {
            if (c.members.length > 0 && !c.internal) lags.push(lagOf(c, now))
          }
          return lags
        })
      ),
      draining: Effect.sync(() => {
        if (closed) return true
        for (const c of consumers.values()) if (c.group !== undefined && isDraining(c)) return true
        return false
      }),
      messages: (topic) =>
        Effect.clockWith((clock) =>
          Effect.sync(() => {
            log.expire(clock.currentTimeMillisUnsafe())
            return log.messages(topic)
          })
        ),
      groups: Effect.clockWith((clock) =>
        Effect.sync(() => {
          const now = clock.currentTimeMillisUnsafe()
          return Array.from(consumers.values(), (c) => ({ ...lagOf(c, now), members: c.members.length }))
        })
      ),
      // A memory publish is stored before it returns: nothing is ever in flight or waiting.
      publishing: Effect.succeed({ inFlight: 0, waiting: 0 }),
      topics: topics.registry,
      fetch: fetcher.fetch
    }

    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        closed = true
        fetcher.stored()
        for (const consumer of consumers.values()) {
          for (const member of consumer.members) {
            member.stopping = true
            member.wake.openUnsafe()
          }
        }
      })
    )
    return transport
  })

/** Whether a (valid) topic has a wildcard token: a pattern reads stored events only. */
const isPattern = (topic: string): boolean => topic.split(".").some((token) => token === "*" || token === ">")

/**
 * The one line a consumer with `ackPolicy: "none"` leaves for an outcome it cannot apply: the message is not
 * redelivered and not dead-lettered (the NATS transport words it the same; docs/semantics.md, "Subscribe options").
 */
const logUnacknowledged = (
  topic: string,
  group: string | undefined,
  subject: string,
  outcome: Exclude<Outcome, { readonly _tag: "Ack" }>
): Effect.Effect<void> =>
  Effect.logWarning(
    `cqbus: a message on ${subject} (${group === undefined ? "subscription" : `group ${group}`} of ${topic}) is ` +
      `dropped: ackPolicy "none" neither redelivers nor dead-letters it (outcome ${outcome._tag}${
        outcome._tag === "Nak" ? `: ${outcome.error}` : outcome._tag === "DeadLetter" ? `: ${outcome.reason}` : ""
      })`
  )

const MemoryTransportKey: Context.ServiceClass<MemoryTransport, "@cqbus/core/MemoryTransport", MemoryTransportShape> =
  Context.Service<MemoryTransport, MemoryTransportShape>()("@cqbus/core/MemoryTransport")

/**
 * The memory transport with its inspection members (retained messages, every group). `layer` provides it together
 * with the generic `Transport`: the same object seen through the port.
 *
 * @since 0.1.0
 * @category services
 */
export class MemoryTransport extends MemoryTransportKey {}

/**
 * A fresh memory transport as `Transport` and `MemoryTransport`. Fails with `ConfigError` when an option is out of
 * range.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: MemoryTransportOptions = {}): Layer.Layer<Transport | MemoryTransport, ConfigError> =>
  Layer.effectContext(
    Effect.map(make(options), (memory) => Context.make(Transport, memory).pipe(Context.add(MemoryTransport, memory)))
  )
