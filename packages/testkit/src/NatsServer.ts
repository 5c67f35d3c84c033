/**
 * A `nats-server` launcher for tests: each call starts a private server with JetStream on a free loopback port and a
 * fresh temporary store, waits until it is ready, and can stop, kill (a crash) and restart it on the same port and
 * store, for reliability tests that take a broker away under load. `start` is the plain Promise form for any test;
 * `make` (scoped) and `layer` (the `NatsServer` service) stop the server and remove its store when their scope
 * closes. Servers a test forgot are killed, and their stores removed, when the test process exits, on Node, Bun and
 * Deno alike.
 *
 * Needs the `nats-server` binary on `PATH` (DESIGN §6: the Debian package `nats-server`, 2.9.10).
 *
 * @module
 */
import fsp from "node:fs/promises"
import os from "node:os"
import path from "node:path"
import { Context, Effect, Layer, type Scope } from "effect"
import { NatsServerError } from "./Errors.ts"
import { freePort } from "./internal/net.ts"
import {
  configText,
  DEFAULT_START_TIMEOUT_MS,
  installBackstop,
  live,
  ServerProcess,
  setupError
} from "./internal/process.ts"
import type { NatsServerOptions, NatsServerShape } from "./internal/serverTypes.ts"

export type { NatsServerOptions, NatsServerShape } from "./internal/serverTypes.ts"

const START_ATTEMPTS = 5

/** Any failure while starting, as a `NatsServerError` (a launch failure already is one). */
const startError = (cause: unknown): NatsServerError =>
  cause instanceof NatsServerError ? cause : setupError("cannot start nats-server", cause)

/**
 * Starts a `nats-server` with JetStream on a free port of 127.0.0.1 and a fresh store under the OS temp directory
 * (`cqbus-nats-*`), and resolves once it is ready: it logged "Server is ready" and its port answers with an `INFO`
 * that says `"jetstream":true`. Rejects with a `NatsServerError` (its `reason`, the command line, the log tail) when
 * the binary is missing, the server exits early or is not ready within `startTimeout`. Call `cleanup()` when done
 * (a `finally`).
 *
 * @example
 * ```ts
 * import { test } from "node:test"
 * import { NatsServer } from "@cqbus/testkit/nats-server"
 *
 * test("survives a broker crash", async () => {
 *   const server = await NatsServer.start()
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
export const start = async (options: NatsServerOptions = {}): Promise<NatsServerShape> => {
  installBackstop()
  let storeDir: string
  try {
    storeDir = await fsp.mkdtemp(path.join(os.tmpdir(), "cqbus-nats-"))
  } catch (cause) {
    throw setupError("cannot create the temporary store", cause)
  }
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
      const server = new ServerProcess(port, monitorPort, storeDir, configFile, options)
      live.add(server)
      const launch = await server.launch(deadline)
      if (launch._tag === "Ready") return server
      live.delete(server)
      await server.kill()
      if (launch._tag === "Failed") throw launch.error
      if (launch._tag === "TimedOut") throw server.timeoutError()
      // another process took the port between our probe and the server's bind: pick new ports
      last = server.error("PortInUse", `${launch.reason} (attempt ${attempt} of ${START_ATTEMPTS}, each on a new port)`)
      if (Date.now() >= deadline) break
    }
    throw last ?? setupError("nats-server could not be started", "no attempt was made")
  } catch (error) {
    await fsp.rm(storeDir, { recursive: true, force: true, maxRetries: 3 })
    throw startError(error)
  }
}

/**
 * A scoped test server: started when the effect runs, stopped and its store removed when the scope closes.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: NatsServerOptions = {}): Effect.Effect<NatsServerShape, NatsServerError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.tryPromise({ try: () => start(options), catch: startError }),
    (server) => Effect.promise(() => server.cleanup())
  )

const NatsServerKey: Context.ServiceClass<NatsServer, "@cqbus/testkit/NatsServer", NatsServerShape> = Context
  .Service<NatsServer, NatsServerShape>()("@cqbus/testkit/NatsServer")

/**
 * The test server of the current scope, as a service: `yield* NatsServer.NatsServer` gives its `NatsServerShape`
 * (`url`, `restart()`, ...). Provided by `layer`.
 *
 * @since 0.1.0
 * @category services
 */
export class NatsServer extends NatsServerKey {}

/**
 * The `NatsServer` service: a server started when the layer is built, stopped and its store removed when the layer
 * is released.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { NatsServer } from "@cqbus/testkit/nats-server"
 *
 * const program = Effect.gen(function*() {
 *   const server = yield* NatsServer.NatsServer
 *   yield* Effect.promise(() => server.restart())
 *   return server.url
 * })
 * await Effect.runPromise(program.pipe(Effect.provide(NatsServer.layer())))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: NatsServerOptions = {}): Layer.Layer<NatsServer, NatsServerError> =>
  Layer.effect(NatsServer, make(options))
