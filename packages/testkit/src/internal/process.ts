/**
 * One `nats-server` process of a test server: spawning it, reading its log until it is ready (and checking from
 * outside that the port is its own), signals (stop, kill, pause, resume), restarts on the same port and store, and
 * the exit backstop that kills whatever a test forgot. `NatsServer` builds its public API on this.
 */
import { type ChildProcess, spawn } from "node:child_process"
import fs from "node:fs"
import fsp from "node:fs/promises"
import net from "node:net"
import process from "node:process"
import { NatsServerError, type NatsServerErrorReason } from "../Errors.ts"
import { HOST } from "./net.ts"
import type { NatsServerOptions, NatsServerShape } from "./serverTypes.ts"

const LOG_LINES = 200
const STOP_GRACE_MS = 5_000
export const DEFAULT_START_TIMEOUT_MS = 10_000
const MISSING_BINARY_HINT = "install the Debian package nats-server"

// Every server not yet cleaned up. Deno skips a file's top-level after() when one of its tests is skipped, and a
// test may simply forget: whatever is left is SIGKILLed and its store removed when the process exits.
export const live: Set<ServerProcess> = new Set()
let backstopInstalled = false

export const installBackstop = (): void => {
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

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

const quote = (arg: string): string => (/^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`)

/** A shell-quoted command line. */
export const commandLine = (command: ReadonlyArray<string>): string => command.map(quote).join(" ")

/** The message of a launch failure: what happened, the command line and the log tail. */
export const describeLaunch = (summary: string, command: string, logTail: ReadonlyArray<string>): string => {
  const tail = logTail.length === 0 ? "  (no output)" : logTail.map((line) => `  ${line}`).join("\n")
  return `${summary}\ncommand: ${command}\nlast log lines:\n${tail}`
}

/** A failure to prepare a start (store, configuration file, ports), with what the launcher was doing. */
export const setupError = (what: string, cause: unknown): NatsServerError =>
  new NatsServerError({
    reason: "Setup",
    message: `${what}: ${cause instanceof Error ? cause.message : String(cause)}`,
    command: "",
    logTail: [],
    cause
  })

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
export type Launch =
  | { readonly _tag: "Ready" }
  | { readonly _tag: "PortInUse"; readonly reason: string }
  | { readonly _tag: "TimedOut" }
  | { readonly _tag: "Failed"; readonly error: NatsServerError }

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

/** A test server's process across its starts; the object `NatsServer.start` hands out. */
export class ServerProcess implements NatsServerShape {
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
      ...(o.jetstream === false ? [] : ["-js"]),
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

  error(reason: NatsServerErrorReason, summary: string, cause?: unknown): NatsServerError {
    const command = commandLine(this.lastCommand)
    const logTail = this.log
    return new NatsServerError({
      reason,
      message: describeLaunch(summary, command, logTail),
      command,
      logTail,
      ...(cause === undefined ? {} : { cause })
    })
  }

  /** One attempt: spawn, then wait until ready, until it exits, or until `deadline`. */
  async launch(deadline: number): Promise<Launch> {
    const args = this.args()
    this.lastCommand = [this.binary, ...args]
    if (this.lines.length > 0) this.record(`---- cqbus testkit: starting again: ${commandLine(this.lastCommand)}`)
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
        : { _tag: "Failed", error: this.error("Exited", reason) }
    }
    if (outcome === "timeout") {
      await this.kill()
      return { _tag: "TimedOut" }
    }
    // "Server is ready" comes after JetStream started and the client listener is bound; check both from outside,
    // and that the port is ours (its INFO has the server id this process logged).
    try {
      const info = await readInfo(this.port, Math.max(1_000, deadline - Date.now()))
      if (this.options.jetstream !== false && info.jetstream !== true) throw new Error(`INFO from ${HOST}:${this.port} does not say "jetstream":true`)
      if (serverId !== undefined && info.server_id !== serverId) {
        throw new Error(`${HOST}:${this.port} is served by ${String(info.server_id)}, not this server (${serverId})`)
      }
    } catch (cause) {
      await this.kill()
      return {
        _tag: "Failed",
        error: this.error("NotReady", `${this.binary} logged "Server is ready" but ${(cause as Error).message}`, cause)
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
      ? this.error("BinaryNotFound", `${this.binary} not found on PATH; ${MISSING_BINARY_HINT}`, cause)
      : this.error("Spawn", `cannot run ${this.binary}: ${(cause as Error | undefined)?.message ?? String(cause)}`, cause)
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
      if (Date.now() > deadline) throw this.error("PauseTimeout", `${this.binary} (pid ${pid}) did not stop within ${PAUSE_TIMEOUT_MS} ms of SIGSTOP`)
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
    return portInUse === undefined
      ? this.error("StartTimeout", `${this.binary} was not ready within ${this.startTimeout} ms (no "Server is ready" in its log)`)
      : this.error("PortInUse", `${portInUse}: port ${this.port} stayed in use for ${this.startTimeout} ms`)
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

/** The configuration-file text for `options`, or `undefined` when the command line says it all. */
export const configText = (options: NatsServerOptions): string | undefined => {
  const lines: Array<string> = []
  if (options.maxPayload !== undefined) lines.push(`max_payload: ${options.maxPayload}`)
  const js = options.jetstream
  if (js !== undefined && js !== false && (js.maxMemory !== undefined || js.maxFile !== undefined)) {
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
