/**
 * Decoding a delivery as a typed event, shared by everything that hands typed events to user code (`subscribe`,
 * `Fetch`), so a body of the wrong type is refused the same way everywhere.
 */
import { type DescMessage, fromBinary, type MessageShape } from "@bufbuild/protobuf"
import { HeaderNames, readHeader } from "../Envelope.ts"
import { DecodeError } from "../Errors.ts"
import type { EventDef } from "../EventDef.ts"
import type { IncomingMessage } from "../Transport.ts"

/**
 * Decodes a delivery as the event's type. A `ce-type` header naming another type is a decode error too: protobuf
 * would often "decode" foreign bytes into a message with garbage fields.
 */
export const decodeEvent = <S extends DescMessage>(
  event: EventDef<S>,
  message: IncomingMessage,
  topic: string
): MessageShape<S> | DecodeError => {
  const type = readHeader(message, HeaderNames.type)
  if (type !== undefined && type !== event.type) {
    return new DecodeError({
      topic,
      typeName: event.type,
      message: `expected a ${event.type} on ${topic} but the message says it is a ${type} (ce-type)`
    })
  }
  try {
    return fromBinary(event.schema, message.body)
  } catch (cause) {
    return new DecodeError({
      topic,
      typeName: event.type,
      message: `cannot decode the body of a message on ${message.subject} as ${event.type}: ${
        cause instanceof Error ? cause.message : String(cause)
      }`,
      cause
    })
  }
}
