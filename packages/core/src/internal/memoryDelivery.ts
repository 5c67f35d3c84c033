/**
 * What the memory transport hands out and stores for a retained entry — the message a handler gets and the record a
 * dead letter becomes — in one place, so its subscriptions and its fetches deliver and dead-letter alike.
 */
import type { DeadLetter, IncomingMessage } from "../Transport.ts"
import type { Entry } from "./memoryLog.ts"

/**
 * The message delivered for `entry` at its `deliveryCount`-th delivery to a group. `live`: to a subscription of an
 * ephemeral topic, which has no stream position and nothing to deliver again from.
 */
export const incomingOf = (entry: Entry, deliveryCount: number, live = false): IncomingMessage => ({
  subject: entry.topic,
  body: entry.body,
  headers: entry.headers,
  deliveryCount: live ? 1 : deliveryCount,
  sequence: live ? undefined : entry.sequence,
  publishedAt: entry.publishedAt,
  redeliverable: !live
})

/** The dead letter of `entry` after `deliveryCount` deliveries to `group`, dead-lettered at `now` (ms). */
export const deadLetterRecord = (
  entry: Entry,
  letter: { readonly reason: string; readonly errorTag: string },
  deliveryCount: number,
  sequence: number | undefined,
  group: string | undefined,
  now: number
): DeadLetter => ({
  subject: entry.topic,
  body: entry.body,
  headers: entry.headers,
  reason: letter.reason,
  errorTag: letter.errorTag,
  deliveryCount,
  sequence,
  group,
  deadLetteredAt: new Date(now)
})
