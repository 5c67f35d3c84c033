/**
 * The envelope of an event on the wire: CloudEvents attributes in binary mode, carried as message headers (the
 * CloudEvents NATS binding), around a body that is the bare protobuf encoding of the event. A Go service that knows
 * nothing of the headers still reads the body; cqbus still reads a message that has no headers (DESIGN §5).
 *
 * @module
 */
import type { Headers, IncomingMessage } from "./Transport.ts"

/**
 * The header names cqbus writes and reads.
 *
 * @since 0.1.0
 * @category wire
 */
export const HeaderNames: {
  readonly specVersion: "ce-specversion"
  readonly id: "ce-id"
  readonly type: "ce-type"
  readonly source: "ce-source"
  readonly time: "ce-time"
  readonly contentType: "content-type"
  readonly partitionKey: "ce-partitionkey"
  readonly correlationId: "ce-correlationid"
  readonly traceparent: "traceparent"
  readonly tracestate: "tracestate"
  readonly replayCount: "cqbus-replay-count"
  readonly replayGroup: "cqbus-replay-group"
} = {
  specVersion: "ce-specversion",
  id: "ce-id",
  type: "ce-type",
  source: "ce-source",
  time: "ce-time",
  contentType: "content-type",
  /** The CloudEvents partitioning extension: the ordering key (aggregate id). */
  partitionKey: "ce-partitionkey",
  /** The CloudEvents correlation extension. */
  correlationId: "ce-correlationid",
  traceparent: "traceparent",
  tracestate: "tracestate",
  /** How many times the event was replayed from the dead letters (`DeadLetters.replay`); absent on the first publish. */
  replayCount: "cqbus-replay-count",
  /**
   * The one group a replayed event is meant for: every other subscription (another group, or none) acknowledges it
   * without running its handler.
   */
  replayGroup: "cqbus-replay-group"
}

/**
 * The content type of a protobuf body.
 *
 * @since 0.1.0
 * @category wire
 */
export const PROTOBUF_CONTENT_TYPE = "application/protobuf"

/**
 * The attributes of one outgoing event.
 *
 * @since 0.1.0
 * @category wire
 */
export interface EnvelopeAttributes {
  readonly id: string
  /** Protobuf full name of the body, or `undefined` for raw bytes of unknown type. */
  readonly type: string | undefined
  readonly source: string
  readonly time: Date
  readonly key: string | undefined
  readonly correlationId: string | undefined
  /** Extra headers from the caller; the CloudEvents attributes above win over a header of the same name. */
  readonly headers: Headers | undefined
}

// Formatting a timestamp costs more than the rest of the envelope; events published in the same millisecond share it.
let lastMillis = Number.NaN
let lastIso = ""
const isoTime = (millis: number): string => {
  if (millis !== lastMillis) {
    lastMillis = millis
    lastIso = new Date(millis).toISOString()
  }
  return lastIso
}

/**
 * The headers of an outgoing event.
 *
 * @since 0.1.0
 * @category wire
 */
export const envelopeHeaders = (attributes: EnvelopeAttributes): Headers => {
  const headers: Record<string, string> = attributes.headers === undefined ? {} : { ...attributes.headers }
  headers[HeaderNames.specVersion] = "1.0"
  headers[HeaderNames.id] = attributes.id
  headers[HeaderNames.source] = attributes.source
  headers[HeaderNames.time] = isoTime(attributes.time.getTime())
  if (attributes.type !== undefined) {
    headers[HeaderNames.type] = attributes.type
    headers[HeaderNames.contentType] = PROTOBUF_CONTENT_TYPE
  }
  if (attributes.key !== undefined) headers[HeaderNames.partitionKey] = attributes.key
  if (attributes.correlationId !== undefined) headers[HeaderNames.correlationId] = attributes.correlationId
  return headers
}

/**
 * A fresh event id (a random UUID), from the Web Crypto API every runtime has.
 *
 * @since 0.1.0
 * @category wire
 */
export const newEventId = (): string => webCrypto.randomUUID()

// The core is compiled without DOM or Node typings (it must not depend on either), so the one Web API it uses is
// declared here.
const webCrypto = (globalThis as unknown as { readonly crypto: { randomUUID(): string } }).crypto

/**
 * Reads one header of an incoming message, through the backend's lazy `header` when it has one.
 *
 * @since 0.1.0
 * @category wire
 */
export const readHeader = (message: IncomingMessage, name: string): string | undefined =>
  message.header !== undefined ? message.header(name) : message.headers[name]
