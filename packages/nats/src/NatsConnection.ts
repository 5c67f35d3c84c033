/**
 * The NATS connection a bus runs on: either injected (any nats.js transport, so Deno and edge runtimes work) or
 * created here with `@nats-io/transport-node` from servers and credentials. Its state (connected, disconnected,
 * reconnecting, closed; reconnect count; last error) is tracked, and every change is published as a
 * `ConnectionEvent`, so plugins and health checks can watch it. `onReconnect` registers Effects that run, in
 * registration order, each time the connection is restored (jxt-core's `RegisterReconnectCallback`).
 *
 * `NatsConnection.layer(config)` provides the connection alone, without JetStream: enough for request-reply
 * (`NatsRequestReply.layer`) against any server, JetStream enabled or not.
 *
 * @module
 */
import { type ConnectionEvent as CoreConnectionEvent, type ConnectionState as CoreConnectionState } from "@cqbus/core"
import { redactSecrets } from "@cqbus/core/backend"
import {
  type Authenticator,
  credsAuthenticator,
  type NatsConnection as NatsClient,
  nkeyAuthenticator,
  tokenAuthenticator,
  usernamePasswordAuthenticator
} from "@nats-io/nats-core"
import { connect } from "@nats-io/transport-node"
import { Cause, Context, Duration, Effect, Layer, PubSub, Redacted, type Scope, Stream, SubscriptionRef } from "effect"
import { readFile } from "node:fs/promises"
import type { NatsEventBusConfig } from "./NatsConfig.ts"
import { connectProblem } from "./internal/errors.ts"
import { NatsError } from "./NatsError.ts"

/**
 * The state of the connection as the client sees it (the core `ConnectionState`, re-exported for NATS users).
 *
 * @since 0.1.0
 * @category models
 */
export type ConnectionState = CoreConnectionState

/**
 * One thing that happened to the connection (the core `ConnectionEvent`, re-exported for NATS users): `Connected`,
 * `Disconnected`, `Reconnecting` (with its attempt number), `Reconnected`, `Closed` (with its reason).
 *
 * @since 0.1.0
 * @category models
 */
export type ConnectionEvent = CoreConnectionEvent

/**
 * An open connection and its watched state.
 *
 * @since 0.1.0
 * @category models
 */
export interface ManagedConnection {
  readonly nc: NatsClient
  readonly state: SubscriptionRef.SubscriptionRef<ConnectionState>
  /**
   * `Connected` when the connection is up at the time of subscribing (`Closed` when it is already closed), then every
   * later event; ends after `Closed`.
   */
  readonly events: Stream.Stream<ConnectionEvent>
  /**
   * Registers a hook for the current scope (see `onReconnect`, which also provides the hook's requirements).
   */
  readonly onReconnect: (hook: Effect.Effect<unknown, unknown>) => Effect.Effect<void, never, Scope.Scope>
  /** Whether this bus opened the connection (and so closes it). */
  readonly owned: boolean
}

/**
 * nats.js ignores credentials written into a server URL (`nats://user:pass@host`, `nats://token@host`), which nats.go
 * and the nats CLI honour, so such a `NATS_URL` failed with "Authorization Violation" whatever the password. They are
 * taken out of the URLs here and used when the config names no credentials of its own.
 */
const splitUrlCredentials = (servers: ReadonlyArray<string>): {
  readonly servers: Array<string>
  readonly user?: string
  readonly pass?: string
  readonly token?: string
} => {
  let found: { user?: string; pass?: string; token?: string } = {}
  const clean = servers.map((server) => {
    const match = /^([a-z][a-z0-9+.-]*:\/\/)([^@/\s]+)@(.*)$/i.exec(server)
    if (match === null) return server
    const [, scheme, info, rest] = match as unknown as [string, string, string, string]
    if (Object.keys(found).length === 0) {
      const colon = info.indexOf(":")
      found = colon < 0
        ? { token: decodeURIComponent(info) }
        : { user: decodeURIComponent(info.slice(0, colon)), pass: decodeURIComponent(info.slice(colon + 1)) }
    }
    return `${scheme}${rest}`
  })
  return { servers: clean, ...found }
}

const authenticators = async (
  config: NatsEventBusConfig,
  fromUrl: ReturnType<typeof splitUrlCredentials>
): Promise<ReadonlyArray<Authenticator>> => {
  const list: Array<Authenticator> = []
  if (config.user !== undefined) {
    list.push(usernamePasswordAuthenticator(config.user, config.password && Redacted.value(config.password)))
  }
  if (config.token !== undefined) list.push(tokenAuthenticator(Redacted.value(config.token)))
  if (config.nkeySeed !== undefined) list.push(nkeyAuthenticator(new TextEncoder().encode(Redacted.value(config.nkeySeed))))
  if (config.credsFile !== undefined) list.push(credsAuthenticator(new Uint8Array(await readFile(config.credsFile))))
  if (list.length === 0 && fromUrl.user !== undefined) list.push(usernamePasswordAuthenticator(fromUrl.user, fromUrl.pass))
  if (list.length === 0 && fromUrl.token !== undefined) list.push(tokenAuthenticator(fromUrl.token))
  return list
}

/** Strips anything that looks like a credential out of an error text before it is stored or shown (core's rules). */
const redact: (text: string) => string = redactSecrets

const describeServers = (servers: string | ReadonlyArray<string>): string =>
  redact(typeof servers === "string" ? servers : servers.join(","))

/**
 * The text of a connect failure, said once: nats.js wraps the socket's error (`connection refused` around
 * `connect ECONNREFUSED 127.0.0.1:4222`), and the inner text is added only when it says something the outer does not.
 */
const connectFailure = (cause: unknown): string => {
  const outer = cause instanceof Error ? cause.message : String(cause)
  const inner = cause instanceof Error && cause.cause instanceof Error ? cause.cause.message : undefined
  return redact(inner === undefined || outer.includes(inner) ? outer : `${outer} (${inner})`)
}

/** One attempt to open a connection. */
const open = (config: NatsEventBusConfig, servers: string | ReadonlyArray<string>): Effect.Effect<NatsClient, NatsError> =>
  Effect.gen(function*() {
    const fromUrl = splitUrlCredentials(typeof servers === "string" ? [servers] : servers)
    const auth = yield* Effect.tryPromise({
      try: () => authenticators(config, fromUrl),
      catch: (cause) =>
        new NatsError({
          reason: "Config",
          message: `cannot read the NATS credentials${config.credsFile === undefined ? "" : ` file ${config.credsFile}`}: ${
            connectFailure(cause)
          }`
        })
    })
    return yield* Effect.tryPromise({
      try: () => {
        const tls = config.tls === undefined || config.tls === false
          ? undefined
          : config.tls === true
          ? {}
          : { ...config.tls }
        return connect({
          servers: fromUrl.servers,
          name: config.name ?? config.source ?? "cqbus",
          maxReconnectAttempts: config.reconnect?.maxAttempts ?? -1,
          // nats.js otherwise builds two Error objects (with stack traces) per request, PubAck waits included: about
          // half of the client's CPU per publish. cqbus reports its own typed errors, so the traces add nothing.
          noAsyncTraces: true,
          reconnectTimeWait: Duration.toMillis(config.reconnect?.wait ?? "250 millis"),
          reconnectJitter: Duration.toMillis(config.reconnect?.jitter ?? "100 millis"),
          ...(config.connect?.timeout === undefined ? {} : { timeout: Duration.toMillis(config.connect.timeout) }),
          ...(auth.length > 0 ? { authenticator: [...auth] } : {}),
          ...(tls === undefined ? {} : { tls })
        })
      },
      // No `cause`: the nats.js error (and its socket error) would print the same text twice more, unredacted.
      catch: (cause) => {
        const { problem, reason } = connectProblem(cause)
        const failure = connectFailure(cause)
        // The one TLS failure the client cannot see: a server that requires a client certificate ends the handshake
        // without a word, and the attempt times out. Say so where it may be the cause.
        const certificate = config.tls !== undefined && config.tls !== false &&
            (config.tls === true || config.tls.certFile === undefined) && /timeout/i.test(failure)
          ? "; if the server requires a client certificate, set tls.certFile and tls.keyFile"
          : ""
        return new NatsError({
          reason,
          message: `cannot connect to NATS at ${describeServers(servers)}: ${
            problem === undefined ? failure : `${problem} (${failure})`
          }${certificate}`
        })
      }
    })
  })

/**
 * Opens (or adopts) the connection for a scope; an owned connection is drained when the scope closes. The first
 * connection is retried on `config.connect.retry` when given (fail-fast otherwise); each failed attempt leaves a
 * warning.
 *
 * @since 0.1.0
 * @category constructors
 */
export const acquire = (
  config: NatsEventBusConfig,
  defaultServers: string | ReadonlyArray<string>
): Effect.Effect<ManagedConnection, NatsError, Scope.Scope> =>
  Effect.gen(function*() {
    const owned = config.connection === undefined
    // Made before the connection, so the release of an owned connection can still announce `Closed` (the watching
    // fibers below are interrupted before it runs: a scope closes in reverse order).
    const pubsub = yield* PubSub.unbounded<ConnectionEvent>()
    let closedReason: string | undefined
    const publish = (event: ConnectionEvent): Effect.Effect<void> => {
      if (event._tag === "Closed") {
        if (closedReason !== undefined) return Effect.void
        closedReason = event.reason
      }
      return Effect.asVoid(PubSub.publish(pubsub, event))
    }
    const servers = config.servers ?? defaultServers
    const retry = config.connect?.retry
    const first = retry === undefined ? open(config, servers) : open(config, servers).pipe(
      Effect.tapError((error) =>
        error.reason === "Connect" ? Effect.logWarning(`cqbus: ${error.message}; retrying`) : Effect.void
      ),
      // Only an unreachable server is worth waiting for: refused credentials, a TLS set-up that cannot work and
      // unreadable credentials fail the same way next time (and a retried wrong password looks like an attack).
      Effect.retry({ schedule: retry, while: (error) => error.reason === "Connect" })
    )
    const nc = config.connection ?? (yield* Effect.acquireRelease(
      first,
      (nc) =>
        Effect.promise(() => nc.isClosed() ? Promise.resolve() : nc.drain().catch(() => nc.close())).pipe(
          Effect.andThen(SubscriptionRef.update(state, (s) => ({ ...s, status: "closed" as const }))),
          Effect.andThen(Effect.suspend(() => publish({ _tag: "Closed", reason: "closed" })))
        )
    ))
    const state: SubscriptionRef.SubscriptionRef<ConnectionState> = yield* SubscriptionRef.make<ConnectionState>({
      status: nc.isClosed() ? "closed" : "connected",
      reconnects: 0,
      lastError: undefined,
      server: nc.getServer()
    })
    const update = (f: (s: ConnectionState) => ConnectionState) => SubscriptionRef.update(state, f)
    // Subscribed before the status loop starts, so the hook runner cannot miss a reconnect.
    const reconnects = yield* PubSub.subscribe(pubsub)
    // Attempts within the current outage; nats.js reports one `reconnecting` per server dialled.
    let attempts = 0
    // Watch the client's status events for as long as the scope lives.
    yield* Effect.forkScoped(Effect.promise(async () => {
      for await (const status of nc.status()) {
        switch (status.type) {
          case "disconnect":
            attempts = 0
            await Effect.runPromise(
              update((s) => ({ ...s, status: "disconnected" })).pipe(
                Effect.andThen(publish({ _tag: "Disconnected", server: redact(status.server) }))
              )
            )
            break
          case "reconnecting":
            attempts += 1
            await Effect.runPromise(
              update((s) => ({ ...s, status: "reconnecting" })).pipe(
                Effect.andThen(publish({ _tag: "Reconnecting", attempt: attempts }))
              )
            )
            break
          case "reconnect":
            await Effect.runPromise(
              update((s) => ({ ...s, status: "connected", reconnects: s.reconnects + 1, server: nc.getServer() })).pipe(
                Effect.andThen(publish({ _tag: "Reconnected", server: redact(status.server), attempts }))
              )
            )
            attempts = 0
            break
          case "error":
            await Effect.runPromise(update((s) => ({ ...s, lastError: redact(String(status.error)) })))
            break
          case "close":
            await Effect.runPromise(update((s) => ({ ...s, status: "closed" })))
            break
        }
      }
    }))
    yield* Effect.forkScoped(Effect.promise(async () => {
      const error = await nc.closed()
      await Effect.runPromise(
        update((s) => ({ ...s, status: "closed" })).pipe(
          Effect.andThen(Effect.suspend(() =>
            publish({ _tag: "Closed", reason: error instanceof Error ? redact(error.message) : "closed" })
          ))
        )
      )
    }))

    // Hooks in registration order. One runner takes the events one at a time, so the hooks of a second reconnect wait
    // for those of the first, and a hook never runs twice at once.
    const hooks: Array<{ readonly run: Effect.Effect<unknown, unknown> }> = []
    const runHooks = Effect.suspend(() =>
      Effect.forEach([...hooks], (hook, index) =>
        hook.run.pipe(
          // A failing hook is the application's problem, not the connection's: say so and run the next one.
          Effect.catchCause((cause) =>
            Cause.hasInterruptsOnly(cause)
              ? Effect.void
              : Effect.logWarning(`cqbus: reconnect hook ${index + 1} of ${hooks.length} failed`, cause)
          )
        ), { discard: true })
    )
    yield* Effect.forkScoped(Effect.forever(
      Effect.flatMap(PubSub.take(reconnects), (event) => event._tag === "Reconnected" ? runHooks : Effect.void)
    ))
    const onReconnect = (hook: Effect.Effect<unknown, unknown>): Effect.Effect<void, never, Scope.Scope> =>
      Effect.suspend(() => {
        const entry = { run: hook }
        hooks.push(entry)
        return Effect.addFinalizer(() =>
          Effect.sync(() => {
            const at = hooks.indexOf(entry)
            if (at >= 0) hooks.splice(at, 1)
          })
        )
      })

    const events: Stream.Stream<ConnectionEvent> = Stream.unwrap(Effect.gen(function*() {
      // Subscribe first, then read the state: an event in between shows up twice at worst, never not at all.
      const subscription = yield* PubSub.subscribe(pubsub)
      const now = yield* SubscriptionRef.get(state)
      const first: ReadonlyArray<ConnectionEvent> = closedReason !== undefined
        ? [{ _tag: "Closed", reason: closedReason }]
        : now.status === "connected"
        ? [{ _tag: "Connected", server: now.server === undefined ? undefined : redact(now.server) }]
        : []
      return Stream.concat(Stream.fromIterable(first), Stream.fromSubscription(subscription)).pipe(
        Stream.takeUntil((event) => event._tag === "Closed")
      )
    }))
    return { nc, state, events, onReconnect, owned }
  })

/** Options of the connection alone (`NatsConnection.layer`): the connection part of `NatsEventBusConfig`. */
type ConnectionConfig = Omit<NatsEventBusConfig, "stream" | "provisioning" | "deadLetters">

const NatsConnectionKey: Context.ServiceClass<NatsConnection, "@cqbus/nats/NatsConnection", ManagedConnection> =
  Context.Service<NatsConnection, ManagedConnection>()("@cqbus/nats/NatsConnection")

/**
 * The NATS connection as a service: the connection, its watched state, and whether this layer owns it.
 * `NatsEventBus.layer` and `NatsTransport.layer` provide it too; `NatsConnection.layer` provides it alone, for
 * request-reply without JetStream.
 *
 * @since 0.1.0
 * @category services
 */
export class NatsConnection extends NatsConnectionKey {}

/**
 * The connection alone: opened (or `config.connection` adopted) for the layer's lifetime; no JetStream call is made.
 *
 * @example
 * ```ts
 * import { Layer } from "effect"
 * import { NatsConnection, NatsRequestReply } from "@cqbus/nats"
 * const live = NatsRequestReply.layer.pipe(Layer.provideMerge(NatsConnection.layer({ servers: "nats://127.0.0.1:4222" })))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (config: ConnectionConfig = {}): Layer.Layer<NatsConnection, NatsError> =>
  Layer.effect(NatsConnection, acquire(config, "nats://127.0.0.1:4222"))

/**
 * Runs `hook` each time the connection is restored after a loss, for as long as the current scope lives (the
 * registration ends with it). Hooks run one after another in registration order, once the connection is restored,
 * once per reconnect; a hook that fails (or dies) leaves one warning line and the next hook still runs, and nothing it
 * does stops the bus. Its requirements are taken from where it is registered. Subscriptions need no hook: they
 * resume by themselves; a hook is for what the application keeps beside the bus (a cache to refresh, a gap to
 * re-read, a presence to announce again).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { NatsConnection } from "@cqbus/nats"
 *
 * const program = Effect.gen(function*() {
 *   yield* NatsConnection.onReconnect(Effect.logInfo("connection restored: refreshing the price cache"))
 *   return yield* Effect.never // the hook stays registered while this scope lives
 * }).pipe(Effect.scoped, Effect.provide(NatsConnection.layer({ servers: "nats://127.0.0.1:4222" })))
 * ```
 *
 * @since 0.1.0
 * @category reconnects
 */
export const onReconnect = <E, R>(
  hook: Effect.Effect<unknown, E, R>
): Effect.Effect<void, never, NatsConnection | Scope.Scope | R> =>
  Effect.gen(function*() {
    const connection = yield* NatsConnection
    const context = yield* Effect.context<R>()
    yield* connection.onReconnect(Effect.provideContext(hook, context))
  })

/**
 * The connection's events (see `ManagedConnection.events`), for request-reply users without a `Transport`; the
 * `Transport` capability `connection.events` is the same stream.
 *
 * @since 0.1.0
 * @category reconnects
 */
export const events: Stream.Stream<ConnectionEvent, never, NatsConnection> = Stream.unwrap(
  Effect.map(Effect.service(NatsConnection), (connection) => connection.events)
)
