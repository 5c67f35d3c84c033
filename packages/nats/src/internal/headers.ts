/**
 * NATS header blocks, both ways: cqbus headers (a plain record, lower-case CloudEvents names) encoded for a publish,
 * and incoming blocks read without nats.js's decoder. Incoming names are lower-cased, except NATS's own `Nats-*`
 * headers, so a Go publisher's `Ce-Id` reads as `ce-id`.
 */
import type { Headers } from "@cqbus/core"
import {
  headers as natsHeaders,
  InvalidArgumentError,
  type Match,
  type Msg,
  type MsgHdrs,
  MsgHdrsImpl
} from "@nats-io/nats-core"

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

const DECODER = new TextDecoder()
export const ENCODER: InstanceType<typeof TextEncoder> = new TextEncoder()
export const CR = 13
export const LF = 10
export const CRLF: Uint8Array = Uint8Array.of(CR, LF)
const END = Uint8Array.of(CR, LF, CR, LF)

/**
 * A header block encoded in one pass, for `nc.publish`, whose only use of its `headers` option is `encode()`. Building
 * a nats.js `MsgHdrs` instead (`append` per header: a name check that builds an array, a search of all names, a
 * regular expression per value, a `Map` and an array per name) was about a tenth of the client's time per publish.
 * Anything else a caller asks of it is answered by a `MsgHdrs` decoded from the block on first use.
 */
export class EncodedHeaders implements MsgHdrs {
  #block: Uint8Array | undefined
  #view: MsgHdrsImpl | undefined
  constructor(block: Uint8Array) {
    this.#block = block
  }
  #read(): MsgHdrsImpl {
    return this.#view ??= MsgHdrsImpl.decode(this.#block!)
  }
  #write(): MsgHdrsImpl {
    const view = this.#read()
    this.#block = undefined
    return view
  }
  encode(): Uint8Array {
    return this.#block ??= this.#read().encode()
  }
  [Symbol.iterator](): IterableIterator<[string, Array<string>]> {
    return this.#read()[Symbol.iterator]()
  }
  get hasError(): boolean {
    return this.#read().hasError
  }
  get status(): string {
    return this.#read().status
  }
  get code(): number {
    return this.#read().code
  }
  get description(): string {
    return this.#read().description
  }
  get(k: string, match?: Match): string {
    return this.#read().get(k, match as "exact" | undefined)
  }
  last(k: string, match?: Match): string {
    return this.#read().last(k, match as "exact" | undefined)
  }
  has(k: string, match?: Match): boolean {
    return this.#read().has(k, match)
  }
  keys(): Array<string> {
    return this.#read().keys()
  }
  values(k: string, match?: Match): Array<string> {
    return this.#read().values(k, match)
  }
  set(k: string, v: string, match?: Match): void {
    this.#write().set(k, v, match)
  }
  append(k: string, v: string, match?: Match): void {
    this.#write().append(k, v, match)
  }
  delete(k: string, match?: Match): void {
    this.#write().delete(k, match)
  }
}

/** Header names already checked; the envelope's names repeat on every publish. Bounded: caller-chosen names vary. */
const validNames = new Set<string>()

/** The checks nats.js's `append` makes, with its errors: printable ASCII names without `:`, values without CR/LF. */
const checkName = (name: string): void => {
  if (validNames.has(name)) return
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i)
    if (c === 58 || c < 33 || c > 126) {
      throw new InvalidArgumentError(`'header' ${JSON.stringify(name[i])} is not a valid character in a header name`)
    }
  }
  if (validNames.size < 1024) validNames.add(name)
}

const headerValue = (value: string): string => {
  if (value.indexOf("\r") >= 0 || value.indexOf("\n") >= 0) {
    throw new InvalidArgumentError("'header' values cannot contain \\r or \\n")
  }
  return value.trim()
}

/**
 * UTF-8 bytes of `text`, carved out of a shared slab: a `new Uint8Array` of a few hundred bytes (what
 * `TextEncoder.encode` returns) gets a backing store of its own outside the JavaScript heap, slow to allocate and to
 * collect; a view of a slab does not. nats.js copies the block into its outgoing buffer at the next flush, and a slab
 * region is never written twice, so a slab lives only as long as some of its blocks are still referenced.
 */
const SLAB = 64 * 1024
let slab = new Uint8Array(SLAB)
let slabUsed = 0
const encodeText = (text: string): Uint8Array => {
  const most = text.length * 3
  if (most > SLAB / 8) return ENCODER.encode(text)
  if (slabUsed + most > SLAB) {
    slab = new Uint8Array(SLAB)
    slabUsed = 0
  }
  const { written } = ENCODER.encodeInto(text, slab.subarray(slabUsed))
  const bytes = slab.subarray(slabUsed, slabUsed + written)
  slabUsed += written
  return bytes
}

/**
 * The headers of one event, byte for byte what nats.js's `MsgHdrs` encodes (names checked, values checked and
 * trimmed as its `append` does): the envelope's headers, then `Nats-Msg-Id`, in the order `js.publish` sent them
 * (docs/wire-format.md, pinned by packages/nats/test/interop.test.ts).
 */
export const encodeHeaders = (headers: Headers, msgId: string): MsgHdrs => {
  let block = "NATS/1.0\r\n"
  for (const name in headers) {
    checkName(name)
    block += `${name}: ${headerValue(headers[name]!)}\r\n`
  }
  return new EncodedHeaders(encodeText(`${block}Nats-Msg-Id: ${headerValue(msgId)}\r\n\r\n`))
}

/**
 * The `Buffer` methods (Node, Bun; nats.js hands messages over as `Buffer`s there) that read part of a buffer without
 * copying it into a string first: a native sequence search and a ranged UTF-8 decode.
 */
interface BufferLike {
  readonly indexOf?: (value: Uint8Array | number, byteOffset: number) => number
  readonly utf8Slice?: (start: number, end: number) => string
}

const isBufferLike = (data: Uint8Array): data is Uint8Array & Required<BufferLike> =>
  typeof (data as BufferLike).utf8Slice === "function"

/** `\r\n<name>:` as bytes, per header name (a handful of names are ever asked for). */
const patterns = new Map<string, Uint8Array>()
const patternOf = (name: string): Uint8Array => {
  let pattern = patterns.get(name)
  if (pattern === undefined) {
    pattern = ENCODER.encode(`\r\n${name}:`)
    if (patterns.size < 256) patterns.set(name, pattern)
  }
  return pattern
}

/**
 * A raw NATS header block (`NATS/1.0[ code description]\r\nName: value\r\n...\r\n\r\n`) read lazily. A delivery
 * needs one to three headers (`ce-type`, then `ce-id` or the key when something asks); building the whole record, or
 * nats.js's `MsgHdrs` (which searches every key for every line it appends), cost more than the protobuf decode of a
 * small event. So a single header is found with a native byte search where the runtime has one (cqbus writes
 * lower-case names), else in the decoded block lower-cased (any spelling), and the record is built only when asked for.
 */
export class HeaderBlock {
  readonly #data: Uint8Array
  readonly #length: number
  #text: string | undefined
  #lower: string | undefined
  #record: Headers | undefined
  #bytesEnd: number | undefined
  #charsEnd: number | undefined
  /** The first `length` bytes of `data` are the block. */
  constructor(data: Uint8Array, length: number) {
    this.#data = data
    this.#length = length
  }

  get #decoded(): string {
    if (this.#text === undefined) {
      const data = this.#data
      this.#text = isBufferLike(data) ? data.utf8Slice(0, this.#length) : DECODER.decode(data.subarray(0, this.#length))
    }
    return this.#text
  }

  /** The status code of the first line (100 heartbeat, 408 expired, ...), 0 for an ordinary message or no code. */
  get code(): number {
    const data = this.#data
    // "NATS/1.0" is 8 bytes; a status follows after a space: "NATS/1.0 408 Request Timeout".
    if (this.#length < 12 || data[8] !== 32 || !isDigit(data[9]!) || !isDigit(data[10]!) || !isDigit(data[11]!)) {
      return 0
    }
    return (data[9]! - 48) * 100 + (data[10]! - 48) * 10 + (data[11]! - 48)
  }

  /** The block as it came, byte for byte (a view, not a copy). */
  get bytes(): Uint8Array {
    return this.#data.subarray(0, this.#length)
  }

  /** The status description ("Request Timeout", "Consumer Deleted"). */
  get description(): string {
    const text = this.#decoded
    const end = text.indexOf("\r\n")
    return text.charCodeAt(8) === 32 ? text.slice(12, end < 0 ? text.length : end).trim() : ""
  }

  /** The first value of a header; `name` is lower-case (or a `Nats-*` name as written). */
  get(name: string): string | undefined {
    if (this.#record !== undefined) return this.#record[name]
    const data = this.#data
    if (this.#text === undefined && isBufferLike(data) && !name.startsWith("Nats-")) {
      const pattern = patternOf(name)
      const at = data.indexOf(pattern, 0)
      // Inside the block: the block's own final CRLF followed by a body that starts like a header is not a header.
      // An earlier line with the same name in another case comes first (the record's rule): leave it to the text path.
      if (at >= 0 && at < this.#byteEnd(data) && !earlierBytes(data, name, at)) {
        let i = at + name.length + 3
        while (data[i] === 32 || data[i] === 9) i++
        // A line ends at CRLF only: a bare CR (or LF) is part of the value, as nats-server and Go's reader see it.
        let end = data.indexOf(CRLF, i)
        if (end < 0 || end > this.#length) end = this.#length
        while (end > i && (data[end - 1] === 32 || data[end - 1] === 9)) end--
        return data.utf8Slice(i, end)
      }
      // Absent in every ASCII case: the answer without decoding the block (the bus asks for `cqbus-replay-group` on
      // every delivery, and it is almost never there). Only for a name without "k": U+212A KELVIN SIGN lower-cases to
      // "k", so only the decoded path sees such a spelling; every other non-ASCII character stays non-ASCII.
      if (at < 0 && !name.includes("k") && !namedLine(data, this.#length, name)) return undefined
    }
    const text = this.#decoded
    // cqbus writes lower-case names, so the exact name usually matches; other spellings need the lower-cased copy.
    if (!name.startsWith("Nats-")) {
      const at = text.indexOf(`\r\n${name}:`)
      if (!earlierText(text, name, at)) {
        const exact = this.#valueAt(at, name.length)
        if (exact !== undefined) return exact
      }
    }
    if (this.#lower === undefined) {
      const lower = text.toLowerCase()
      // Lower-casing keeps positions only for ASCII; anything else takes the full parse.
      if (lower.length !== text.length) return this.headers[name]
      this.#lower = lower
    }
    const key = name.startsWith("Nats-") ? name.toLowerCase() : name
    return this.#valueAt(this.#lower.indexOf(`\r\n${key}:`), key.length)
  }

  /**
   * Where the header lines end in the bytes: the CRLF of the empty line that closes the block (what the record stops
   * at), or the block's length. Lines a hostile block carries after that empty line are not headers.
   */
  #byteEnd(data: Uint8Array & Required<BufferLike>): number {
    if (this.#bytesEnd === undefined) {
      const end = data.indexOf(END, 0)
      // `end` is the CRLF ending the last line; the empty line's CRLF follows it.
      this.#bytesEnd = end < 0 || end + 2 > this.#length ? this.#length : end + 2
    }
    return this.#bytesEnd
  }

  /** `#byteEnd` in the decoded block. */
  get #textEnd(): number {
    if (this.#charsEnd === undefined) {
      const end = this.#decoded.indexOf("\r\n\r\n")
      this.#charsEnd = end < 0 ? this.#decoded.length : end + 2
    }
    return this.#charsEnd
  }

  /** The value of the header line found at `at` (the position of its leading CRLF), trimmed. */
  #valueAt(at: number, nameLength: number): string | undefined {
    if (at < 0 || at >= this.#textEnd) return undefined
    const text = this.#decoded
    let i = at + nameLength + 3
    while (text.charCodeAt(i) === 32 || text.charCodeAt(i) === 9) i++
    let end = text.indexOf("\r\n", i)
    if (end < 0) end = text.length
    while (end > i && (text.charCodeAt(end - 1) === 32 || text.charCodeAt(end - 1) === 9)) end--
    return text.slice(i, end)
  }

  /** Every header as a record, names lower-cased except `Nats-*` (first value of each name). */
  get headers(): Headers {
    if (this.#record === undefined) this.#record = parseLines(this.#decoded)
    return this.#record
  }
}

const isDigit = (c: number): boolean => c >= 48 && c <= 57

/** ASCII lower case of a byte or char code. */
const fold = (c: number): number => c >= 65 && c <= 90 ? c + 32 : c

/**
 * Whether a line before position `at` (a CRLF found for the lower-case `name`) names `name` in another case. Only the
 * CRs before `at` are visited (a few lines), so the single-header read stays cheap.
 */
const earlierBytes = (data: Uint8Array & Required<BufferLike>, name: string, at: number): boolean => {
  for (let i = data.indexOf(13, 0); i >= 0 && i < at; i = data.indexOf(13, i + 1)) {
    if (data[i + 1] !== 10 || data[i + 2 + name.length] !== 58) continue
    let k = 0
    while (k < name.length && fold(data[i + 2 + k]!) === name.charCodeAt(k)) k++
    if (k === name.length) return true
  }
  return false
}

/**
 * Whether a header line of the block (`data[0, length)`, up to its empty line) names `name` in any ASCII case: one pass
 * over the bytes, no native call per line (this answers "absent" for a header asked for on every delivery).
 */
const namedLine = (data: Uint8Array, length: number, name: string): boolean => {
  const n = name.length
  const first = name.charCodeAt(0)
  for (let i = 0; i + n + 2 < length; i++) {
    if (data[i] !== 13 || data[i + 1] !== 10) continue
    const start = i + 2
    if (data[start] === 13) return false // the empty line that ends the block
    if (fold(data[start]!) !== first || data[start + n] !== 58) continue
    let k = 1
    while (k < n && fold(data[start + k]!) === name.charCodeAt(k)) k++
    if (k === n) return true
  }
  return false
}

/** `earlierBytes` on the decoded block. */
const earlierText = (text: string, name: string, at: number): boolean => {
  if (at < 0) return false
  for (let i = text.indexOf("\r\n"); i >= 0 && i < at; i = text.indexOf("\r\n", i + 1)) {
    if (text.charCodeAt(i + 2 + name.length) !== 58) continue
    let k = 0
    while (k < name.length && fold(text.charCodeAt(i + 2 + k)) === name.charCodeAt(k)) k++
    if (k === name.length) return true
  }
  return false
}

/** `text` without leading and trailing spaces and tabs. */
const trimBlanks = (text: string): string => {
  let start = 0
  let end = text.length
  while (start < end && (text.charCodeAt(start) === 32 || text.charCodeAt(start) === 9)) start++
  while (end > start && (text.charCodeAt(end - 1) === 32 || text.charCodeAt(end - 1) === 9)) end--
  return start === 0 && end === text.length ? text : text.slice(start, end)
}

const parseLines = (text: string): Headers => {
  const out: Record<string, string> = {}
  const length = text.length
  let i = text.indexOf("\r\n")
  if (i < 0) return out
  i += 2
  while (i < length) {
    let stop = text.indexOf("\r\n", i)
    if (stop < 0) stop = length
    if (stop === i) break // the empty line that ends the block
    const colon = text.indexOf(":", i)
    if (colon > i && colon < stop) {
      // The name as written (not trimmed: " ce-id" is not `ce-id`, as a single read does not find it either).
      const raw = text.slice(i, colon)
      const name = raw.startsWith("Nats-") ? raw : raw.toLowerCase()
      // Spaces and tabs only, as a single read trims (and Go's textproto): `trim()` would also eat a bare CR or
      // LF and Unicode spaces, and the record would disagree with `get`.
      if (out[name] === undefined) out[name] = trimBlanks(text.slice(colon + 1, stop))
    }
    i = stop + 2
  }
  return out
}

/**
 * What a reader needs of a message's headers: the status, one header, all of them, and the block as it came (for
 * copying it into a dead letter byte for byte).
 */
export interface HeaderSource {
  readonly code: number
  readonly description: string
  readonly get: (name: string) => string | undefined
  readonly headers: Headers
  /** The raw header block; `undefined` without headers (or when the client would not give it). */
  readonly bytes: Uint8Array | undefined
}

const EMPTY_SOURCE: HeaderSource = { code: 0, description: "", get: () => undefined, headers: EMPTY, bytes: undefined }

/** The nats.js message fields the raw header block is read from; guarded, with `msg.headers` as the fallback. */
interface RawMsg {
  readonly _rdata?: unknown
  readonly _msg?: { readonly hdr?: unknown }
  /** A `JsMsg` wraps the core message. */
  readonly msg?: unknown
}

/**
 * The headers of a nats.js message (a core `Msg`, or a `JsMsg` wrapping one), read from its raw block without
 * nats.js's decoder: that decoder throws on a value with a bare CR or LF and on a name it would not write, and a
 * throw here used to become a message NAKed forever. The fallback (a client that hides the raw block) keeps what
 * nats.js can decode and treats an undecodable block as no headers, never as an error.
 */
export const headerSourceOf = (msg: Msg): HeaderSource => {
  let raw = msg as unknown as RawMsg
  if (raw._msg === undefined && typeof raw.msg === "object" && raw.msg !== null) raw = raw.msg as RawMsg
  const hdr = raw._msg?.hdr
  if (typeof hdr === "number" && raw._rdata instanceof Uint8Array) {
    return hdr > 0 ? new HeaderBlock(raw._rdata, hdr) : EMPTY_SOURCE
  }
  let h: MsgHdrs | undefined
  try {
    h = msg.headers
  } catch {
    return EMPTY_SOURCE
  }
  if (h === undefined) return EMPTY_SOURCE
  const headers = fromMsgHdrs(h)
  const encode = (h as { readonly encode?: () => Uint8Array }).encode
  const bytes = typeof encode === "function" ? encode.call(h) : undefined
  return { code: h.code, description: h.description, get: (name) => headers[name], headers, bytes }
}
