/**
 * The memory transport's `fetch` capability: batches for a durable group pulled from the retained log
 * (`memoryLog.ts`), with the semantics of a JetStream pull request — up to `max` messages, redeliveries that are due
 * first, a partial batch when `expires` passes — and the outcomes applied as a subscription's are (redelivery after the
 * `Nak`'s delay, dead letters with the original bytes). Time comes from Effect's `Clock`, so a `TestClock` drives
 * `expires` and redelivery delays.
 *
 * A fetch group keeps its own cursor, apart from the groups of `consume` in `MemoryTransport`: on memory, a group name
 * used both to subscribe and to fetch is two groups (on NATS it is one consumer); docs/operations.md says so.
 */
import { Duration, Effect, Latch } from "effect"
import { SubscribeError } from "../Errors.ts"
import { compilePattern } from "../Topic.ts"
import type { DeadLetter, FetchRequest, Outcome, TransportShape } from "../Transport.ts"
import { deadLetterRecord, incomingOf } from "./memoryDelivery.ts"
import type { Entry, MemoryLog } from "./memoryLog.ts"

/** What fetches share with the rest of the memory transport. */
export interface MemoryFetchStore {
  readonly log: MemoryLog
  /** Stores a dead letter with the transport's others. */
  readonly bury: (letter: DeadLetter) => void
  readonly isClosed: () => boolean
}

/** The fetch capability and the hook that wakes waiting fetches. */
export interface MemoryFetch {
  readonly fetch: NonNullable<TransportShape["fetch"]>
  /** A message was stored (or the transport closed): waiting fetches look again. */
  readonly stored: () => void
}

interface FetchGroup {
  readonly topic: string
  readonly matches: (topic: string) => boolean
  /** The next sequence not yet delivered for the first time. */
  cursor: number
  /** First deliveries the start position picked (`"lastPerSubject"`), oldest last. */
  readonly first: Array<Entry>
  /** Messages to deliver again, each when it is due (a hand-back is due at once). */
  readonly again: Array<{ readonly entry: Entry; readonly due: number }>
  /** Delivery counts of messages not yet acked or dead-lettered. */
  readonly attempts: Map<number, number>
}

const HANDBACK: Outcome = { _tag: "Handback" }

/** Builds the fetch capability over a memory log. */
export const makeMemoryFetch = (store: MemoryFetchStore): MemoryFetch => {
  const { log } = store
  const groups = new Map<string, FetchGroup>()
  const waiters = new Set<Latch.Latch>()

  const wakeAll = (): void => {
    for (const latch of waiters) latch.openUnsafe()
  }

  const groupOf = (request: FetchRequest): FetchGroup | SubscribeError => {
    const found = groups.get(request.group)
    if (found !== undefined) {
      return found.topic === request.topic ? found : new SubscribeError({
        topic: request.topic,
        group: request.group,
        reason: "GroupConflict",
        message: `group ${request.group} already fetches ${found.topic}; one group cannot also fetch ${request.topic}`
      })
    }
    const matches = compilePattern(request.topic)
    const start = log.startPosition(request.deliverPolicy, matches)
    const group: FetchGroup = {
      topic: request.topic,
      matches,
      cursor: start.cursor,
      first: start.first.slice().reverse(),
      again: [],
      attempts: new Map()
    }
    groups.set(request.group, group)
    return group
  }

  /** Takes up to `room` messages for the group at `now`: due redeliveries in sequence order, then first deliveries. */
  const take = (group: FetchGroup, now: number, room: number, into: Array<Entry>): void => {
    if (room <= 0) return
    const due = group.again.filter((item) => item.due <= now).sort((a, b) => a.entry.sequence - b.entry.sequence)
    for (const item of due.slice(0, room)) {
      group.again.splice(group.again.indexOf(item), 1)
      into.push(item.entry)
      room--
    }
    log.expire(now)
    while (room > 0) {
      while (group.first.length > 0 && group.first[group.first.length - 1]!.deleted) group.first.pop()
      const entry = group.first.pop() ?? log.next(group.cursor, group.matches)
      if (entry === undefined) {
        group.cursor = Math.max(group.cursor, log.nextSequence())
        return
      }
      if (entry.sequence >= group.cursor) group.cursor = entry.sequence + 1
      into.push(entry)
      room--
    }
  }

  const nextDue = (group: FetchGroup): number => {
    let due = Infinity
    for (const item of group.again) due = Math.min(due, item.due)
    return due
  }

  const settle = (group: FetchGroup, name: string, entry: Entry, outcome: Outcome, now: number): void => {
    switch (outcome._tag) {
      case "Ack":
        group.attempts.delete(entry.sequence)
        return
      case "Nak":
        group.again.push({ entry, due: now + Duration.toMillis(outcome.delay) })
        return
      case "Handback":
        group.again.push({ entry, due: now })
        return
      case "DeadLetter":
        store.bury(deadLetterRecord(
          entry,
          outcome,
          Math.max(outcome.attempts, group.attempts.get(entry.sequence) ?? 1),
          entry.sequence,
          name,
          now
        ))
        group.attempts.delete(entry.sequence)
        return
    }
  }

  const fetch: MemoryFetch["fetch"] = (request, process) =>
    Effect.clockWith((clock) =>
      Effect.suspend(() => {
        if (store.isClosed()) {
          return Effect.fail(
            new SubscribeError({
              topic: request.topic,
              group: request.group,
              reason: "Closed",
              message: `cannot fetch ${request.topic}: the memory transport is closed`
            })
          )
        }
        const group = groupOf(request)
        if (group instanceof SubscribeError) return Effect.fail(group)
        const now = () => clock.currentTimeMillisUnsafe()
        const deadline = now() + Duration.toMillis(request.expires)
        const batch: Array<Entry> = []
        const latch = Latch.makeUnsafe(false)
        /** Fill the batch until it is full, `expires` passes or the transport closes. */
        const collect: Effect.Effect<void> = Effect.suspend(() => {
          latch.closeUnsafe()
          const at = now()
          take(group, at, request.max - batch.length, batch)
          if (batch.length >= request.max || at >= deadline || store.isClosed()) return Effect.void
          const wake = Math.min(deadline, nextDue(group))
          return Effect.andThen(Effect.raceFirst(latch.await, Effect.sleep(Math.max(0, wake - at))), collect)
        })
        // Settled in batch order once `process` answers; what it gave no outcome for, or everything when it is
        // interrupted, is handed back.
        const settleAll = (outcomes: ReadonlyArray<Outcome>) =>
          Effect.sync(() => {
            const at = now()
            batch.forEach((entry, i) => settle(group, request.group, entry, outcomes[i] ?? HANDBACK, at))
            wakeAll()
          })
        const handle = Effect.suspend(() => {
          if (batch.length === 0) return Effect.void
          const messages = batch.map((entry) => {
            const count = (group.attempts.get(entry.sequence) ?? 0) + 1
            group.attempts.set(entry.sequence, count)
            return incomingOf(entry, count)
          })
          return Effect.uninterruptibleMask((restore) =>
            Effect.flatMap(Effect.exit(restore(process(messages))), (exit) =>
              settleAll(exit._tag === "Success" ? exit.value : []))
          )
        })
        waiters.add(latch)
        return Effect.andThen(collect, Effect.sync(() => waiters.delete(latch))).pipe(
          // Interrupted while waiting: what was taken goes back, as not delivered.
          Effect.onInterrupt(() =>
            Effect.sync(() => {
              waiters.delete(latch)
              const at = now()
              for (const entry of batch) group.again.push({ entry, due: at })
              wakeAll()
            })
          ),
          Effect.andThen(handle)
        )
      })
    )

  return { fetch, stored: wakeAll }
}
