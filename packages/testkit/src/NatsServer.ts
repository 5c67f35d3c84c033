/**
 * A `nats-server` launcher for tests: each call starts a private server with JetStream on a free loopback port and a
 * fresh temporary store, waits until it is ready, and can stop, kill (a crash) and restart it on the same port and
 * store, for reliability tests that take a broker away under load. Use the plain Promise form
 * (`startNatsServer`) from any test, or the scoped Effect form (`NatsServer.layer`, `NatsServer.make`) that stops
 * the server and removes its store when the scope closes. Servers a test forgot are killed, and their stores
 * removed, when the test process exits, on Node, Bun and Deno alike.
 *
 * Needs the `nats-server` binary on `PATH` (DESIGN §6: the Debian package `nats-server`, 2.9.10).
 *
 * @module
 */
import { type ChildProcess, spawn } from "node:child_process"
import fs from "node:fs"
import fsp from "node:fs/promises"
import net from "node:net"
import os from "node:os"
import path from "node:path"
import process from "node:process"
import { Context, Effect, Layer, type Scope } from "effect"
import { freePort, HOST } from "./internal/net.ts"

/**
 * How to start a test server. Every option has a default: `startNatsServer()` gives JetStream on a free port of
 * 127.0.0.1, no monitoring, no auth and the server's default limits.
 *
 * @since 0.1.0
 * @category models
 */
export interface NatsServerOptions {
  /** The executable, looked up on `PATH` unless it is a path (default `"nats-server"`). */
  readonly binary?: string
  /** The HTTP monitoring endpoint (`-m`): `true` for a free port, a number for that port (default off). */
  readonly monitoring?: boolean | number
  /** The largest message body the server accepts, in bytes (`max_payload`; server default 1 MiB). */
  readonly maxPayload?: number
  /** JetStream limits in bytes (`max_memory_store`, `max_file_store`; server default: a share of RAM and disk). */
  readonly jetstream?: {
    readonly maxMemory?: number
    readonly maxFile?: number
  }
  /** Require this user name (with `password`) from clients (`--user`). */
  readonly user?: string
  /** The password for `user` (`--pass`). */
  readonly password?: string
  /** Require this token from clients (`--auth`). */
  readonly token?: string
  /**
   * Serve TLS on the client port (the `tls` block): the server's certificate and key, and with `caFile` plus `verify`
   * ask every client for a certificate signed by that CA (mutual TLS). PEM file paths; the testkit makes none.
   */
  readonly tls?: {
    readonly certFile: string
    readonly keyFile: string
    readonly caFile?: string
    readonly verify?: boolean
  }
  /**
   * Extra configuration-file text, appended after the settings above (e.g. `"max_connections: 10"`). Command-line
   * flags win over the file, as in `nats-server` itself.
   */
  readonly config?: string
  /**
   * Extra command-line arguments, after the launcher's own. Do not redirect the log (`-l`, `-s`): readiness is read
   * from it.
   */
  readonly args?: ReadonlyArray<string>
  /** How long a start or restart may take until the server is ready, in milliseconds (default 10,000). */
  readonly startTimeout?: number
}

/**
 * A running (or stopped) test server. `url`, `port` and `storeDir` stay the same across `restart()`; `pid` is that
 * of the current (or last) process.
 *
 * @since 0.1.0
 * @category models
 */
export interface NatsServer {
  /** `nats://127.0.0.1:PORT`: what clients connect to. */
  readonly url: string
  /** The client port on 127.0.0.1. */
  readonly port: number
  /** The monitoring port when `monitoring` was requested. */
  readonly monitorPort: number | undefined
  /** `http://127.0.0.1:PORT` of the monitoring endpoint when `monitoring` was requested. */
  readonly monitorUrl: string | undefined
  /** The temporary directory given to `-sd`; JetStream keeps its data in `jetstream/` inside it. */
  readonly storeDir: string
  /** The process id of the current (or last) server process. */
  readonly pid: number
  /** Whether the server process is alive (it may have been stopped, killed or crashed). */
  readonly isRunning: boolean
  /** The command line of the last start, as executable and arguments. */
  readonly command: ReadonlyArray<string>
  /** The last ~200 lines the server logged (across restarts), for assertion messages. */
  readonly log: ReadonlyArray<string>
  /** Stops the server gracefully (SIGTERM), SIGKILL after 5 s; resolves when it has exited. No-op when stopped. */
  stop(): Promise<void>
  /** Kills the server (SIGKILL), as in a crash; resolves when it has exited. No-op when stopped. */
  kill(): Promise<void>
  /**
   * Freezes the server (SIGSTOP), as a hung process whose sockets stay open; resolves once it has really stopped.
   * A signal is delivered asynchronously: for a few milliseconds after `kill(2)` returns, a loaded machine may still
   * run the server's threads, and a probe sent in that window is answered. Where `/proc` exists (Linux) this waits
   * until every thread of the process is in the stopped state; elsewhere it waits 100 ms. No-op when not running.
   */
  pause(): Promise<void>
  /** Lets a paused server run again (SIGCONT). No-op when not running. */
  resume(): Promise<void>
  /**
   * Starts the server again on the same port with the same store (stopping it first if it runs), and resolves when
   * it is ready. Retries while the port is still held by the previous process or anything else.
   */
  restart(): Promise<void>
  /** Stops the server if it runs and removes its store directory. Safe to call more than once. */
  cleanup(): Promise<void>
}

/**
 * A server could not be started: the binary is missing, it exited early, or it was not ready in time. The message
 * names the cause, the command line and the last lines of the server's log.
 *
 * @since 0.1.0
 * @category errors
 */
export class NatsServerError extends Error {
  /** For `Effect.catchTag`. */
  readonly _tag: "NatsServerError" = "NatsServerError"
  /** The command line that was run, shell-quoted. */
  readonly command: string
  /** The last lines of the server's log. */
  readonly logTail: ReadonlyArray<string>

  constructor(reason: string, command: string, logTail: ReadonlyArray<string>, options?: { readonly cause?: unknown }) {
    const tail = logTail.length === 0 ? "  (no output)" : logTail.map((line) => `  ${line}`).join("\n")
    super(`${reason}\ncommand: ${command}\nlast log lines:\n${tail}`, options)
    this.name = "NatsServerError"
    this.command = command
    this.logTail = logTail
  }
}

const LOG_LINES = 200
const STOP_GRACE_MS = 5_000
const DEFAULT_START_TIMEOUT_MS = 10_000
const START_ATTEMPTS = 5
const MISSING_BINARY_HINT = "install the Debian package nats-server"

// ------------------------------------------------------------------------------------------------ backstop

// Every server not yet cleaned up. Deno skips a file's top-level after() when one of its tests is skipped, and a
// test may simply forget: whatever is left is SIGKILLed and its store removed when the process exits.
const live = new Set<Server>()
let backstopInstalled = false

const installBackstop = (): void => {
  if (backstopInstalled) return
  backstopInstalled = true
  const killAll = (): void => {
    for (const server of live) server.killNow()
    for (const server of live) {
      try {
        fs.rmSync(server.storeDir, { recursive: true, force: true, maxRetries: 3 })
      } catch {
        // best effort while exiting
      }
    }
    live.clear()
  }
  process.on("exit", killAll)
  // `deno test` never emits process "exit" (`deno run` does); it dispatches "unload" on the global scope instead.
  // Node has no global addEventListener; in Bun the second call finds nothing left to do.
  ;(globalThis as { addEventListener?: (type: string, listener: () => void) => void }).addEventListener?.(
    "unload",
    killAll
  )
}

// --------------------------------------------------------------------------------------------------- helpers

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

const quote = (arg: string): string => (/^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`)

/** Resolves with the first line the server sends (`INFO {...}`), parsed. */
const readInfo = (port: number, timeoutMs: number): Promise<Record<string, unknown>> =>
  new Promise((resolve, reject) => {
    const socket = net.connect({ host: HOST, port })
    let buffer = ""
    let done = false
    const finish = (error: Error | undefined, info?: Record<string, unknown>): void => {
      if (done) return
      done = true
      clearTimeout(timer)
      socket.destroy()
      if (error !== undefined) reject(error)
      else resolve(info ?? {})
    }
    const timer = setTimeout(() => finish(new Error(`no INFO line from ${HOST}:${port} within ${timeoutMs} ms`)), timeoutMs)
    socket.setEncoding("utf8")
    socket.on("data", (chunk: string) => {
      buffer += chunk
      const end = buffer.indexOf("\r\n")
      if (end < 0) return
      const line = buffer.slice(0, end)
      if (!line.startsWith("INFO ")) return finish(new Error(`expected INFO from ${HOST}:${port}, got ${line}`))
      try {
        finish(undefined, JSON.parse(line.slice(5)) as Record<string, unknown>)
      } catch (cause) {
        finish(new Error(`unparseable INFO from ${HOST}:${port}: ${line}`, { cause }))
      }
    })
    socket.on("error", (error) => finish(error))
    socket.on("close", () => finish(new Error(`${HOST}:${port} closed the connection before sending INFO`)))
  })

/** Lets a child process or its pipe not keep the event loop alive (a no-op where a runtime lacks `unref`). */
const unref = (handle: unknown): void => {
  ;(handle as { unref?: () => void } | null)?.unref?.()
}

/** The outcome of one launch attempt. */
type Launch =
  | { readonly _tag: "Ready" }
  | { readonly _tag: "PortInUse"; readonly reason: string }
  | { readonly _tag: "TimedOut" }
  | { readonly _tag: "Failed"; readonly error: NatsServerError }

// ---------------------------------------------------------------------------------------------------- server

/** How long `pause()` waits for a SIGSTOPped server to stop. */
const PAUSE_TIMEOUT_MS = 5_000

/**
 * Whether every thread of `pid` is stopped (state `T`/`t` in `/proc/PID/task/TID/stat`), or `undefined` where there
 * is no `/proc` to ask. The state is the first field after the parenthesised command name, which may itself contain
 * spaces and parentheses, hence the last `)`.
 */
const threadsStopped = (pid: number): boolean | undefined => {
  let tasks: Array<string>
  try {
    tasks = fs.readdirSync(`/proc/${pid}/task`)
  } catch {
    return undefined
  }
  return tasks.every((tid) => {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8")
      const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3)
      return state === "T" || state === "t"
    } catch {
      return true // the thread has exited meanwhile
    }
  })
}

class Server implements NatsServer {
  readonly url: string
  readonly monitorUrl: string | undefined
  private child: ChildProcess | undefined
  private exited: Promise<void> = Promise.resolve()
  private closed: Promise<void> = Promise.resolve()
  private running = false
  private paused = false
  private lastPid = 0
  private lastCommand: ReadonlyArray<string> = []
  private readonly lines: Array<string> = []
  // whether the current launch logged "address already in use" (an earlier launch's line must not count)
  private portInUse = false

  constructor(
    readonly port: number,
    readonly monitorPort: number | undefined,
    readonly storeDir: string,
    private readonly configFile: string | undefined,
    private readonly options: NatsServerOptions
  ) {
    this.url = `nats://${HOST}:${port}`
    this.monitorUrl = monitorPort === undefined ? undefined : `http://${HOST}:${monitorPort}`
  }

  get pid(): number {
    return this.lastPid
  }

  get isRunning(): boolean {
    return this.running
  }

  get command(): ReadonlyArray<string> {
    return this.lastCommand
  }

  get log(): ReadonlyArray<string> {
    return [...this.lines]
  }

  get binary(): string {
    return this.options.binary ?? "nats-server"
  }

  get startTimeout(): number {
    return this.options.startTimeout ?? DEFAULT_START_TIMEOUT_MS
  }

  args(): Array<string> {
    const o = this.options
    return [
      ...(this.configFile === undefined ? [] : ["-c", this.configFile]),
      "-a", HOST,
      "-p", String(this.port),
      "-js",
      "-sd", this.storeDir,
      ...(this.monitorPort === undefined ? [] : ["-m", String(this.monitorPort)]),
      ...(o.user === undefined ? [] : ["--user", o.user]),
      ...(o.password === undefined ? [] : ["--pass", o.password]),
      ...(o.token === undefined ? [] : ["--auth", o.token]),
      ...(o.args ?? [])
    ]
  }

  private record(line: string): void {
    if (/address already in use/i.test(line)) this.portInUse = true
    this.lines.push(line)
    if (this.lines.length > LOG_LINES) this.lines.splice(0, this.lines.length - LOG_LINES)
  }

  error(reason: string, cause?: unknown): NatsServerError {
    return new NatsServerError(reason, this.lastCommand.map(quote).join(" "), this.log, { cause })
  }

  /** One attempt: spawn, then wait until ready, until it exits, or until `deadline`. */
  async launch(deadline: number): Promise<Launch> {
    const args = this.args()
    this.lastCommand = [this.binary, ...args]
    if (this.lines.length > 0) this.record(`---- cqbus testkit: starting again: ${this.lastCommand.map(quote).join(" ")}`)
    this.portInUse = false
    let child: ChildProcess
    try {
      child = spawn(this.binary, args, { stdio: ["ignore", "pipe", "pipe"] })
    } catch (cause) {
      return { _tag: "Failed", error: this.spawnError(cause) }
    }
    this.child = child
    this.running = true
    if (child.pid !== undefined) this.lastPid = child.pid

    let serverId: string | undefined
    let onReady: (() => void) | undefined
    let ready = false
    for (const stream of [child.stdout, child.stderr]) {
      if (stream === null) continue
      let partial = ""
      stream.setEncoding("utf8")
      stream.on("data", (chunk: string) => {
        const parts = (partial + chunk).split("\n")
        partial = parts.pop() ?? ""
        for (const line of parts) {
          this.record(line)
          serverId ??= /\[INF\]\s+ID:\s+(\S+)/.exec(line)?.[1]
          if (!ready && line.includes("Server is ready")) {
            ready = true
            onReady?.()
          }
        }
      })
      stream.on("end", () => {
        if (partial !== "") this.record(partial)
        partial = ""
      })
    }
    let spawnFailure: unknown
    this.exited = new Promise<void>((resolve) => {
      child.once("exit", () => resolve())
      child.once("error", (cause) => {
        spawnFailure = cause
        resolve()
      })
    }).then(() => {
      if (this.child === child) this.running = false
    })
    const exited = this.exited
    this.closed = new Promise<void>((resolve) => {
      child.once("close", () => resolve())
      child.once("error", () => resolve())
    })

    let timer: ReturnType<typeof setTimeout> | undefined
    const outcome = await Promise.race([
      new Promise<"ready">((resolve) => {
        onReady = () => resolve("ready")
        if (ready) resolve("ready")
      }),
      exited.then(() => "exited" as const),
      new Promise<"timeout">((resolve) => (timer = setTimeout(() => resolve("timeout"), Math.max(0, deadline - Date.now()))))
    ])
    clearTimeout(timer)

    if (outcome === "exited") {
      if (spawnFailure !== undefined) return { _tag: "Failed", error: this.spawnError(spawnFailure) }
      await this.settle(1_000)
      const how = child.signalCode !== null ? `was killed by ${child.signalCode}` : `exited with code ${child.exitCode}`
      const reason = `${this.binary} ${how} before it was ready`
      return this.portInUse
        ? { _tag: "PortInUse", reason }
        : { _tag: "Failed", error: this.error(reason) }
    }
    if (outcome === "timeout") {
      await this.kill()
      return { _tag: "TimedOut" }
    }
    // "Server is ready" comes after JetStream started and the client listener is bound; check both from outside,
    // and that the port is ours (its INFO has the server id this process logged).
    try {
      const info = await readInfo(this.port, Math.max(1_000, deadline - Date.now()))
      if (info.jetstream !== true) throw new Error(`INFO from ${HOST}:${this.port} does not say "jetstream":true`)
      if (serverId !== undefined && info.server_id !== serverId) {
        throw new Error(`${HOST}:${this.port} is served by ${String(info.server_id)}, not this server (${serverId})`)
      }
    } catch (cause) {
      await this.kill()
      return {
        _tag: "Failed",
        error: this.error(`${this.binary} logged "Server is ready" but ${(cause as Error).message}`, cause)
      }
    }
    // A test that forgets the server must not keep its runtime alive: the exit backstop kills it.
    unref(child)
    unref(child.stdout)
    unref(child.stderr)
    return { _tag: "Ready" }
  }

  private spawnError(cause: unknown): NatsServerError {
    const code = (cause as { code?: unknown } | undefined)?.code
    this.running = false
    return code === "ENOENT"
      ? this.error(`${this.binary} not found on PATH; ${MISSING_BINARY_HINT}`, cause)
      : this.error(`cannot run ${this.binary}: ${(cause as Error | undefined)?.message ?? String(cause)}`, cause)
  }

  /** Waits until the last process has exited and its output is read (bounded: a stray holder of the pipes). */
  private async settle(closeWithinMs: number): Promise<void> {
    await this.exited
    let timer: ReturnType<typeof setTimeout> | undefined
    await Promise.race([this.closed, new Promise<void>((resolve) => (timer = setTimeout(resolve, closeWithinMs)))])
    clearTimeout(timer)
  }

  /** Sends `signal` and waits for the exit, keeping the event loop alive meanwhile. */
  private async signal(signal: "SIGTERM" | "SIGKILL", escalateAfterMs?: number): Promise<void> {
    const child = this.child
    if (child === undefined || !this.running) return this.settle(1_000)
    child.ref()
    let timer: ReturnType<typeof setTimeout> | undefined
    if (escalateAfterMs !== undefined) timer = setTimeout(() => child.kill("SIGKILL"), escalateAfterMs)
    try {
      child.kill(signal)
      // A frozen (paused) process cannot act on SIGTERM until it runs again.
      if (this.paused) child.kill("SIGCONT")
      this.paused = false
      await this.settle(1_000)
    } finally {
      clearTimeout(timer)
    }
  }

  stop(): Promise<void> {
    return this.signal("SIGTERM", STOP_GRACE_MS)
  }

  kill(): Promise<void> {
    return this.signal("SIGKILL")
  }

  async pause(): Promise<void> {
    if (!this.running) return
    const pid = this.lastPid
    process.kill(pid, "SIGSTOP")
    this.paused = true
    const deadline = Date.now() + PAUSE_TIMEOUT_MS
    for (;;) {
      const stopped = threadsStopped(pid)
      if (stopped === undefined) return new Promise((resolve) => setTimeout(resolve, 100))
      if (stopped) return
      if (Date.now() > deadline) throw this.error(`${this.binary} (pid ${pid}) did not stop within ${PAUSE_TIMEOUT_MS} ms of SIGSTOP`)
      await new Promise((resolve) => setTimeout(resolve, 2))
    }
  }

  async resume(): Promise<void> {
    if (this.running) process.kill(this.lastPid, "SIGCONT")
    this.paused = false
  }

  /** SIGKILL without waiting, for the exit backstop. */
  killNow(): void {
    if (!this.running) return
    try {
      this.child?.kill("SIGKILL")
    } catch {
      // already gone
    }
  }

  /** The error for a start that ran out of time, after port conflicts (`portInUse`) or not. */
  timeoutError(portInUse?: string): NatsServerError {
    return this.error(
      portInUse === undefined
        ? `${this.binary} was not ready within ${this.startTimeout} ms (no "Server is ready" in its log)`
        : `${portInUse}: port ${this.port} stayed in use for ${this.startTimeout} ms`
    )
  }

  async restart(): Promise<void> {
    await this.stop()
    live.add(this)
    const deadline = Date.now() + this.startTimeout
    let portInUse: string | undefined
    for (;;) {
      const launch = await this.launch(deadline)
      if (launch._tag === "Ready") return
      if (launch._tag === "Failed") throw launch.error
      if (launch._tag === "TimedOut") throw this.timeoutError(portInUse)
      // the old process (or a stranger) still holds the port: try again until the deadline
      portInUse = launch.reason
      if (Date.now() + 100 >= deadline) throw this.timeoutError(portInUse)
      await sleep(100)
    }
  }

  async cleanup(): Promise<void> {
    await this.stop()
    live.delete(this)
    await fsp.rm(this.storeDir, { recursive: true, force: true, maxRetries: 3 })
  }
}

const configText = (options: NatsServerOptions): string | undefined => {
  const lines: Array<string> = []
  if (options.maxPayload !== undefined) lines.push(`max_payload: ${options.maxPayload}`)
  const js = options.jetstream
  if (js !== undefined && (js.maxMemory !== undefined || js.maxFile !== undefined)) {
    lines.push("jetstream {")
    if (js.maxMemory !== undefined) lines.push(`  max_memory_store: ${js.maxMemory}`)
    if (js.maxFile !== undefined) lines.push(`  max_file_store: ${js.maxFile}`)
    lines.push("}")
  }
  const tls = options.tls
  if (tls !== undefined) {
    lines.push("tls {", `  cert_file: ${JSON.stringify(tls.certFile)}`, `  key_file: ${JSON.stringify(tls.keyFile)}`)
    if (tls.caFile !== undefined) lines.push(`  ca_file: ${JSON.stringify(tls.caFile)}`)
    if (tls.verify === true) lines.push("  verify: true")
    lines.push("}")
  }
  if (options.config !== undefined) lines.push(options.config)
  return lines.length === 0 ? undefined : `${lines.join("\n")}\n`
}

// ------------------------------------------------------------------------------------------------------- API

/**
 * Starts a `nats-server` with JetStream on a free port of 127.0.0.1 and a fresh store under the OS temp directory
 * (`cqbus-nats-*`), and resolves once it is ready: it logged "Server is ready" and its port answers with an `INFO`
 * that says `"jetstream":true`. Rejects with a `NatsServerError` (cause, command line, log tail) when the binary is
 * missing, the server exits early or is not ready within `startTimeout`. Call `cleanup()` when done (a `finally`).
 *
 * @example
 * ```ts
 * import { test } from "node:test"
 * import { startNatsServer } from "@cqbus/testkit/nats-server"
 *
 * test("survives a broker crash", async () => {
 *   const server = await startNatsServer()
 *   try {
 *     // connect to server.url, publish, then:
 *     await server.kill()
 *     await server.restart() // same port, same store
 *   } finally {
 *     await server.cleanup()
 *   }
 * })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const startNatsServer = async (options: NatsServerOptions = {}): Promise<NatsServer> => {
  installBackstop()
  const storeDir = await fsp.mkdtemp(path.join(os.tmpdir(), "cqbus-nats-"))
  const config = configText(options)
  const configFile = config === undefined ? undefined : path.join(storeDir, "nats-server.conf")
  let last: NatsServerError | undefined
  try {
    if (configFile !== undefined && config !== undefined) await fsp.writeFile(configFile, config)
    const startTimeout = options.startTimeout ?? DEFAULT_START_TIMEOUT_MS
    const deadline = Date.now() + startTimeout
    for (let attempt = 1; attempt <= START_ATTEMPTS; attempt++) {
      const port = await freePort()
      const monitorPort = options.monitoring === true
        ? await freePort()
        : typeof options.monitoring === "number"
        ? options.monitoring
        : undefined
      const server = new Server(port, monitorPort, storeDir, configFile, options)
      live.add(server)
      const launch = await server.launch(deadline)
      if (launch._tag === "Ready") return server
      live.delete(server)
      await server.kill()
      if (launch._tag === "Failed") throw launch.error
      if (launch._tag === "TimedOut") throw server.timeoutError()
      // another process took the port between our probe and the server's bind: pick new ports
      last = server.error(`${launch.reason} (attempt ${attempt} of ${START_ATTEMPTS}, each on a new port)`)
      if (Date.now() >= deadline) break
    }
    throw last ?? new NatsServerError("nats-server could not be started", "", [])
  } catch (error) {
    await fsp.rm(storeDir, { recursive: true, force: true, maxRetries: 3 })
    throw error
  }
}

// An explicitly typed base instead of `class extends Context.Service<...>()(...)` (JSR, DESIGN §6).
const NatsTestServerKey: Context.ServiceClass<NatsTestServer, "@cqbus/testkit/NatsTestServer", NatsServer> = Context
  .Service<NatsTestServer, NatsServer>()("@cqbus/testkit/NatsTestServer")

/**
 * The test server of the current scope, as a service: `yield* NatsTestServer` gives its `NatsServer` (`url`,
 * `restart()`, ...). Provide it with `NatsServer.layer(options?)`.
 *
 * @since 0.1.0
 * @category services
 */
export class NatsTestServer extends NatsTestServerKey {}

// A scoped server: started when the effect runs, stopped and its store removed when the scope closes.
const make = (options: NatsServerOptions = {}): Effect.Effect<NatsServer, NatsServerError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.tryPromise({
      try: () => startNatsServer(options),
      catch: (cause) =>
        cause instanceof NatsServerError
          ? cause
          : new NatsServerError(`cannot start nats-server: ${String(cause)}`, "", [], { cause })
    }),
    (server) => Effect.promise(() => server.cleanup())
  )

/**
 * The Effect form of the launcher: `NatsServer.make(options?)` is a scoped `NatsServer` (stopped, and its store
 * removed, when the scope closes) and `NatsServer.layer(options?)` provides it as the `NatsTestServer` service for
 * the layer's lifetime.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { NatsServer, NatsTestServer } from "@cqbus/testkit/nats-server"
 *
 * const program = Effect.gen(function*() {
 *   const server = yield* NatsTestServer
 *   yield* Effect.promise(() => server.restart())
 *   return server.url
 * })
 * await Effect.runPromise(program.pipe(Effect.provide(NatsServer.layer())))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const NatsServer: {
  /** A scoped server: started now, cleaned up when the scope closes. */
  readonly make: (options?: NatsServerOptions) => Effect.Effect<NatsServer, NatsServerError, Scope.Scope>
  /** The `NatsTestServer` service, started when the layer is built and cleaned up when it is released. */
  readonly layer: (options?: NatsServerOptions) => Layer.Layer<NatsTestServer, NatsServerError>
} = {
  make,
  layer: (options = {}) => Layer.effect(NatsTestServer, make(options))
}
