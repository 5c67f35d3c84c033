/**
 * What a delivery of either loop, the JetStream pull loop (`jetStreamDelivery.ts`) or the core subscription of an
 * ephemeral topic (`coreConsumer.ts`), reads the same way from its NATS message: the subject decoded only when read,
 * and the headers from the raw block without building a map (`headers.ts`).
 */
import type { Headers } from "@cqbus/core"
import type { Msg } from "@nats-io/nats-core"
import type { HeaderSource } from "./headers.ts"

/** The message part of a delivery; each loop's delivery class adds what settling it needs. */
export abstract class NatsDelivery {
  readonly body: Uint8Array
  protected readonly msg: Msg
  readonly #headers: HeaderSource
  /** When its handler started running in the background (`Date.now()` ms; 0 while it does not). */
  since = 0
  constructor(msg: Msg, headers: HeaderSource) {
    this.msg = msg
    this.#headers = headers
    this.body = msg.data
  }
  /** Decoded from the wire only when read (the bus reads it only when a handler asks for the topic). */
  get subject(): string {
    return this.msg.subject
  }
  get headers(): Headers {
    return this.#headers.headers
  }
  header(name: string): string | undefined {
    return this.#headers.get(name)
  }
  /** The header block as it came, for the rare path that copies it whole (dead letters, byte for byte). */
  get rawHeaders(): Uint8Array | undefined {
    return this.#headers.bytes
  }
}
