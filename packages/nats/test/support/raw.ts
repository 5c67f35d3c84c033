// A raw NATS protocol client over TCP for the hostile-input tests: it sends header blocks nats.js refuses to build
// (a bare CR or LF in a value, a malformed block) with `HPUB`, and receives messages as the bytes the server sent
// (`HMSG`), so a test can compare header blocks byte for byte without a client library decoding them first. Test
// helper only (Node, Bun and Deno all provide `node:net`); not a test file itself (no `.test.ts`).
import { Buffer } from "node:buffer"
import { connect, type Socket } from "node:net"

/** One message as the server delivered it: the header block (empty for `MSG`) and the body, uninterpreted. */
export interface RawMessage {
  readonly subject: string
  readonly reply: string | undefined
  readonly header: Uint8Array
  readonly body: Uint8Array
}

/** An open raw connection. */
export interface RawClient {
  /** `HPUB` (or `PUB` when `header` is empty) and a round trip, so the server has processed it when this resolves. */
  readonly publish: (subject: string, header: Uint8Array, body: Uint8Array, reply?: string) => Promise<void>
  /** `SUB`; the messages arrive in `messages(sid)`. */
  readonly subscribe: (subject: string) => Promise<number>
  readonly messages: (sid: number) => ReadonlyArray<RawMessage>
  /** `-ERR` lines the server sent. */
  readonly errors: ReadonlyArray<string>
  readonly close: () => void
}

const CRLF = Buffer.from("\r\n")

/** Connects to `url` (`nats://host:port`) and completes the handshake (headers on, a PING answered). */
export const rawConnect = (url: string): Promise<RawClient> =>
  new Promise((resolve, reject) => {
    const { hostname, port } = new URL(url)
    const socket: Socket = connect({ host: hostname, port: Number(port) })
    let pending: Buffer = Buffer.alloc(0)
    const pongs: Array<() => void> = []
    const received = new Map<number, Array<RawMessage>>()
    const errors: Array<string> = []
    let nextSid = 1
    let ready = false

    const write = (chunk: Uint8Array | string) => socket.write(chunk)
    const ping = () =>
      new Promise<void>((done) => {
        pongs.push(done)
        write("PING\r\n")
      })

    // Parses every complete protocol line (and payload) in `pending`; keeps a partial frame for the next read.
    const parse = () => {
      for (;;) {
        const eol = pending.indexOf(CRLF)
        if (eol < 0) return
        const line = pending.subarray(0, eol).toString("latin1")
        const [op, ...args] = line.split(" ")
        if (op === "MSG" || op === "HMSG") {
          const withHeader = op === "HMSG"
          const total = Number(args[args.length - 1])
          const headerLength = withHeader ? Number(args[args.length - 2]) : 0
          const fixed = withHeader ? 4 : 3
          if (pending.length < eol + 2 + total + 2) return
          const payload = pending.subarray(eol + 2, eol + 2 + total)
          const sid = Number(args[1])
          const list = received.get(sid) ?? []
          list.push({
            subject: args[0]!,
            reply: args.length > fixed ? args[2] : undefined,
            header: Uint8Array.from(payload.subarray(0, headerLength)),
            body: Uint8Array.from(payload.subarray(headerLength))
          })
          received.set(sid, list)
          pending = pending.subarray(eol + 2 + total + 2)
          continue
        }
        pending = pending.subarray(eol + 2)
        if (op === "PING") write("PONG\r\n")
        else if (op === "PONG") pongs.shift()?.()
        else if (op === "-ERR") errors.push(line)
        else if (op === "INFO" && !ready) {
          ready = true
          write(`CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":true,"protocol":1}\r\n`)
          ping().then(() => resolve(client), reject)
        }
      }
    }

    socket.on("data", (chunk: Buffer) => {
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk])
      parse()
    })
    socket.on("error", reject)

    const client: RawClient = {
      publish: (subject, header, body, reply) => {
        const to = reply === undefined ? "" : ` ${reply}`
        const head = header.length === 0
          ? `PUB ${subject}${to} ${body.length}\r\n`
          : `HPUB ${subject}${to} ${header.length} ${header.length + body.length}\r\n`
        write(Buffer.concat([Buffer.from(head, "latin1"), header, body, CRLF]))
        return ping()
      },
      subscribe: (subject) => {
        const sid = nextSid++
        write(`SUB ${subject} ${sid}\r\n`)
        return ping().then(() => sid)
      },
      messages: (sid) => received.get(sid) ?? [],
      errors,
      close: () => socket.destroy()
    }
  })
