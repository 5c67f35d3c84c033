/**
 * What a live subscription of the memory transport means: a subscription to a concrete topic made while the topic is
 * ephemeral. It reads no log: each publish on its topic made while it listens is handed to it (one member per group),
 * at most once, with nothing stored to redeliver from. So the options that start from stored events are refused, and
 * every outcome but `Ack` ends in the dead letters rather than in a redelivery (docs/semantics.md, "Ephemeral
 * topics"). `MemoryTransport` runs these subscriptions with its consumer machinery; this module holds the rules.
 */
import type { Entry } from "./memoryLog.ts"
import type { ConsumeOptions, OutgoingMessage, Outcome } from "../Transport.ts"

/** Why a live subscription cannot start with these options, or `undefined` when it can. */
export const refusal = (topic: string, options: ConsumeOptions): string | undefined => {
  const policy = options.deliverPolicy
  const starts = policy === "all" || policy === "new"
    ? undefined
    : typeof policy === "string"
    ? `deliverPolicy "${policy}"`
    : "fromSequence" in policy
    ? "deliverPolicy fromSequence"
    : "deliverPolicy fromTime"
  const asked = starts ?? (options.replay === "original" ? `replay "original"` : undefined)
  return asked === undefined
    ? undefined
    : `cannot subscribe to ${topic} with ${asked}: topic ${topic} is ephemeral: nothing is stored to start from`
}

/**
 * A message as a live subscription receives it. `id` only tells the consumer's in-flight bookkeeping apart; the
 * delivery carries no sequence (nothing was stored), and one entry serves every live subscription of the publish.
 */
export const liveEntry = (message: OutgoingMessage, id: number, now: number): Entry => ({
  sequence: id,
  topic: message.topic,
  body: message.body,
  headers: message.headers,
  eventId: message.eventId,
  publishedAt: new Date(now),
  time: now,
  size: message.body.byteLength,
  deleted: false
})

/** The tag of a live delivery cut off by its subscription closing, run or not. */
export const INTERRUPTED = "Interrupted"

const notRedelivered = (topic: string): string => `not redelivered: topic ${topic} is ephemeral, nothing is stored`

/**
 * The dead letter an outcome of a live delivery leaves (`undefined` for `Ack`): a `Nak` (the handler failed or asked
 * to retry later) with its error, a `DeadLetter` as it is, a `Handback` (the handler was interrupted as the
 * subscription closed) tagged `"Interrupted"`. Nothing is lost silently, even at most once.
 */
export const deadLetterOf = (
  topic: string,
  outcome: Outcome
): { readonly reason: string; readonly errorTag: string } | undefined => {
  switch (outcome._tag) {
    case "Ack":
      return undefined
    case "Nak":
      return { reason: `${outcome.error} (${notRedelivered(topic)})`, errorTag: outcome.errorTag }
    case "DeadLetter":
      return { reason: outcome.reason, errorTag: outcome.errorTag }
    case "Handback":
      return {
        reason: `interrupted: the handler did not finish within drainTimeout as the subscription closed (${
          notRedelivered(topic)
        })`,
        errorTag: INTERRUPTED
      }
  }
}

/** The reason of a message a live subscription received and never started before it closed. */
export const unprocessed = (topic: string): string =>
  `not processed before the subscription closed (${notRedelivered(topic)})`
