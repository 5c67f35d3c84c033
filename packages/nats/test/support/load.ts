// Load and bookkeeping for the fault tests (packages/nats/test/faults.test.ts) and the soak script (scripts/soak.ts): a
// publisher that behaves like a careful caller (retries exactly when a PublishError says `retriable`, with the same
// event id, and gives up otherwise), a tally of what was sent, acked and handled, and the gaps in a series of
// timestamps. Not a test file itself (no `.test.ts`).
import { type EventBusShape, PublishError } from "@cqbus/core"
import { AssetCreatedEvent } from "@cqbus/testkit/events"
import { Effect, Result } from "effect"

/** Everything a load run counts; ids are event ids. */
export class Tally {
  /** Event ids whose publish was attempted at least once. */
  readonly sent: Set<string> = new Set()
  /** Event ids with a PubAck. */
  readonly acked: Set<string> = new Set()
  /** PubAcks that said "duplicate" (a retry of a publish the server had stored after all). */
  duplicateAcks: number = 0
  /** Event ids the caller gave up on: a non-retriable error, or retriable ones past the caller's deadline. */
  readonly givenUp: Map<string, string> = new Map()
  /** Publish failures by `reason` (with " (non-retriable)" when so). */
  readonly failures: Map<string, number> = new Map()
  /** Successful handler runs per event id (more than one = a duplicate delivery). */
  readonly handled: Map<string, number> = new Map()
  /** When each PubAck arrived (ms). */
  readonly ackTimes: Array<number> = []
  /** When each successful handler run ended (ms). */
  readonly handleTimes: Array<number> = []
  /** When each publish failure arrived (ms). */
  readonly failureTimes: Array<number> = []

  /** Records a successful handler run. */
  handle(eventId: string): void {
    this.handled.set(eventId, (this.handled.get(eventId) ?? 0) + 1)
    this.handleTimes.push(Date.now())
  }

  /** Acked events never handled. */
  lost(): Array<string> {
    return [...this.acked].filter((id) => !this.handled.has(id))
  }

  /** Handler runs beyond the first per event. */
  duplicates(): number {
    let n = 0
    for (const count of this.handled.values()) n += count - 1
    return n
  }

  /** The counts every scenario reports. */
  counts(): Record<string, unknown> {
    return {
      sent: this.sent.size,
      acked: this.acked.size,
      duplicateAcks: this.duplicateAcks,
      handled: this.handled.size,
      duplicates: this.duplicates(),
      givenUp: this.givenUp.size,
      lost: this.lost().length,
      publishFailures: Object.fromEntries(this.failures)
    }
  }
}

/**
 * Publishes one AssetCreated event as a careful caller does: on a retriable PublishError it waits `retryAfter` ms and
 * publishes again with the same event id; it gives up on a non-retriable error, or once `giveUpAt` (epoch ms) passed.
 */
export const publishCarefully = (
  bus: EventBusShape,
  tally: Tally,
  eventId: string,
  options: { readonly giveUpAt: number; readonly retryAfter?: number; readonly symbol?: string }
): Effect.Effect<void> =>
  Effect.gen(function*() {
    tally.sent.add(eventId)
    while (true) {
      const result = yield* Effect.result(
        bus.publish(AssetCreatedEvent, { assetId: eventId, symbol: options.symbol ?? "LOAD" }, { eventId })
      )
      if (Result.isSuccess(result)) {
        tally.acked.add(eventId)
        tally.ackTimes.push(Date.now())
        if (result.success.duplicate) tally.duplicateAcks++
        return
      }
      const error = result.failure
      const retriable = error instanceof PublishError && error.retriable
      const label = error instanceof PublishError ? `${error.reason}${retriable ? "" : " (non-retriable)"}` : error._tag
      tally.failures.set(label, (tally.failures.get(label) ?? 0) + 1)
      tally.failureTimes.push(Date.now())
      if (!retriable || Date.now() > options.giveUpAt) {
        tally.givenUp.set(eventId, label)
        return
      }
      yield* Effect.sleep(`${options.retryAfter ?? 50} millis`)
    }
  })

/** The longest interval (ms) between consecutive times in `times` that falls inside [from, to] (sorted copy). */
export const longestGap = (times: ReadonlyArray<number>, from: number, to: number): number => {
  const inside = [from, ...times.filter((t) => t >= from && t <= to), to].sort((a, b) => a - b)
  let gap = 0
  for (let i = 1; i < inside.length; i++) gap = Math.max(gap, inside[i]! - inside[i - 1]!)
  return gap
}

/** The first time in `times` at or after `from`, as ms after `from` (undefined when none). */
export const firstAfter = (times: ReadonlyArray<number>, from: number): number | undefined => {
  let best: number | undefined
  for (const t of times) if (t >= from && (best === undefined || t < best)) best = t
  return best === undefined ? undefined : best - from
}
