/**
 * How a JetStream delivery is answered once the bus has decided its `Outcome`, shared by the pull loop (one delivery
 * at a time) and fetch batches (many at once), so both hold the same rules: the consumer's own `max_deliver` on the
 * server turns a last redelivery into a dead letter, and each outcome maps to one verb of `acks.ts` or a dead-letter
 * record (`deadLetters.ts`).
 */
import type { Outcome } from "@cqbus/core"
import { Duration, type Effect } from "effect"
import type { Acker } from "./acks.ts"
import type { DeadLetterWriter } from "./deadLetters.ts"
import type { JetStreamDelivery } from "./jetStreamDelivery.ts"

/**
 * The outcome as the server lets it be: a consumer whose finite `max_deliver` (on a group left as it is with
 * provisioning "skip") has been reached would not deliver the message again, so a redelivery (`Nak`, `Handback`)
 * becomes a dead letter rather than a silent loss.
 */
export const withinServerLimit = (
  delivery: JetStreamDelivery,
  outcome: Outcome,
  serverMaxDeliver: number | undefined
): Outcome =>
  serverMaxDeliver !== undefined && delivery.deliveryCount >= serverMaxDeliver &&
    (outcome._tag === "Nak" || outcome._tag === "Handback")
    ? {
      _tag: "DeadLetter",
      reason: `delivered ${delivery.deliveryCount} times, the consumer's max_deliver on the server; last outcome ` +
        (outcome._tag === "Nak" ? `error ${outcome.error}` : "handed back"),
      errorTag: "MaxDeliverExceeded",
      attempts: delivery.deliveryCount
    }
    : outcome

/**
 * Answers `delivery` with `outcome`: `+ACK`, `-NAK` with the delay, a bare `-NAK` for a hand-back, or, for a dead
 * letter, an effect that stores the record and then terminates the message (`undefined` for the others: they are
 * sent at once).
 */
export const answer = (
  delivery: JetStreamDelivery,
  outcome: Outcome,
  acker: Acker,
  deadLetters: DeadLetterWriter
): Effect.Effect<void> | undefined => {
  switch (outcome._tag) {
    case "Ack":
      acker.ack(delivery)
      return undefined
    case "Nak":
      acker.nak(delivery, Duration.toMillis(outcome.delay))
      return undefined
    case "Handback":
      acker.handBack(delivery)
      return undefined
    case "DeadLetter":
      return deadLetters.settle(delivery, outcome)
  }
}
