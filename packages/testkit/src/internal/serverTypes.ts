/**
 * The public types of a test server, below both `NatsServer` (which re-exports them) and the `ServerProcess` that
 * implements them, so the process module does not import back from the module built on it.
 *
 * @module
 */

/**
 * How to start a test server. Every option has a default: `start()` gives JetStream on a free port of
 * 127.0.0.1, no monitoring, no auth and the server's default limits.
 */
export interface NatsServerOptions {
  /** The executable, looked up on `PATH` unless it is a path (default `"nats-server"`). */
  readonly binary?: string
  /** The HTTP monitoring endpoint (`-m`): `true` for a free port, a number for that port (default off). */
  readonly monitoring?: boolean | number
  /** The largest message body the server accepts, in bytes (`max_payload`; server default 1 MiB). */
  readonly maxPayload?: number
  /**
   * JetStream limits in bytes (`max_memory_store`, `max_file_store`; server default: a share of RAM and disk), or
   * `false` for a core-NATS server without JetStream (no `-js`; readiness then does not wait for it).
   */
  readonly jetstream?:
    | false
    | {
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
 * A running (or stopped) test server, as `start` resolves with it and the `NatsServer` service holds it. `url`,
 * `port` and `storeDir` stay the same across `restart()`; `pid` is that of the current (or last) process.
 */
export interface NatsServerShape {
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
