/**
 * Every JetStream acknowledgement verb a consumer sends, in one place, so the protocol's answers to a delivery (and
 * the server-version quirks they carry) are read and changed together: `+ACK`, `-NAK` (at once or with a delay),
 * `+WPI` and `+TERM`.
 */
import { type NatsConnection, nanos } from "@nats-io/nats-core"
import type { JetStreamDelivery } from "./jetStreamDelivery.ts"

const ACK = Uint8Array.of(43, 65, 67, 75) // +ACK
const NAK = Uint8Array.of(45, 78, 65, 75) // -NAK
const WPI = Uint8Array.of(43, 87, 80, 73) // +WPI
const TERM = Uint8Array.of(43, 84, 69, 82, 77) // +TERM
const ENCODER = new TextEncoder()

/** Answers deliveries on one connection; nothing is sent once the connection is closed. */
export class Acker {
  readonly #nc: NatsConnection
  constructor(nc: NatsConnection) {
    this.#nc = nc
  }
  /** `+ACK`: the message is done. */
  ack(delivery: JetStreamDelivery): void {
    this.#send(delivery, ACK)
  }
  /** `-NAK` with a delay: redeliver after `delayMs`. */
  nak(delivery: JetStreamDelivery, delayMs: number): void {
    this.#send(delivery, ENCODER.encode(`-NAK {"delay":${nanos(delayMs)}}`))
  }
  /** A bare `-NAK`: redeliver at once (a hand-back, e.g. while draining). */
  handBack(delivery: JetStreamDelivery): void {
    this.#send(delivery, NAK)
  }
  /** `+WPI`: still working, reset the ack timer. */
  working(delivery: JetStreamDelivery): void {
    this.#send(delivery, WPI)
  }
  /**
   * A bare `+TERM`: never deliver it again. nats-server 2.9 ignores `+TERM <reason>` (2.10+ accepts it), and the
   * message then came back after every ackWait, forever; the reason is in the dead-letter record anyway.
   */
  term(delivery: JetStreamDelivery): void {
    this.#send(delivery, TERM)
  }
  // Through the message's own `respond` (the protocol's publish, as nats.js's `JsMsg.ack()` does) rather than
  // `nc.publish`, which validates the subject with a regular expression on every call.
  #send(delivery: JetStreamDelivery, data: Uint8Array): void {
    if (!this.#nc.isClosed()) delivery.respond(data)
  }
}
