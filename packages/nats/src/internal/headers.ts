/**
 * Conversion between cqbus headers (a plain record, lower-case CloudEvents names) and nats.js `MsgHdrs`. Incoming
 * names are lower-cased, except NATS's own `Nats-*` headers, so a Go publisher's `Ce-Id` reads as `ce-id`.
 */
import type { Headers } from "@cqbus/core"
import { headers as natsHeaders, type MsgHdrs } from "@nats-io/nats-core"

/** Headers for an outgoing message; `Nats-Msg-Id` is set by the publish call from the event id. */
export const toMsgHdrs = (headers: Headers): MsgHdrs => {
  const h = natsHeaders()
  // `append`, not `set`: the names of a record are unique already, and `set` searches the existing ones each time.
  for (const name in headers) h.append(name, headers[name]!)
  return h
}

const EMPTY: Headers = Object.freeze({})

/** Headers of an incoming message as a record (first value of each name). */
export const fromMsgHdrs = (h: MsgHdrs | undefined): Headers => {
  if (h === undefined) return EMPTY
  const out: Record<string, string> = {}
  // Iterating the entries reads each header once; `keys()` + `get()` searched every name for every name.
  for (const [name, values] of h) {
    const value = values[0]
    if (value !== undefined) out[name.startsWith("Nats-") ? name : name.toLowerCase()] = value
  }
  return out
}
