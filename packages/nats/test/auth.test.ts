// Every way a NATS user authenticates, right and wrong, against real nats-servers started by the testkit: user and
// password (options and in the URL), token, nkey seed, creds files (an operator made at test time, `resolver: MEMORY`)
// and TLS with certificates made at test time (mutual TLS too). A wrong credential or TLS set-up fails at once with a
// typed NatsError naming the problem (`Authentication`, `Tls`), also when `connect.retry` is set; credentials expiring
// while connected end in a closed connection, not a reconnect loop. Permission errors are typed (publish:
// `PublishError` `PermissionDenied` with readiness still 200 over real HTTP; subscribe: `SubscribeError`
// `PermissionDenied`, not a subscription that never delivers). No credential ever shows in an error, a log line, the
// connection state or the /health JSON.
import { EventBus, PublishError, SubscribeError } from "@cqbus/core"
import { healthRouter } from "@cqbus/health"
import { type NatsEventBusConfig, NatsEventBus, NatsError, NatsTransport } from "@cqbus/nats"
import { AssetCreatedEvent } from "@cqbus/testkit/events"
import { serve } from "@hono/node-server"
import { Cause, Effect, Exit, Layer, Logger, ManagedRuntime, Redacted, References, Schedule, type Scope, SubscriptionRef } from "effect"
import { Hono } from "hono"
import assert from "node:assert/strict"
import fs from "node:fs/promises"
import { test } from "node:test"
import { certificates, nkeyUser, operator, tempDir } from "./support/credentials.ts"
import { bus, run, server, waitFor } from "./support/nats.ts"

/** Every log line of a test, at every level, with its cause rendered (what a log shipper would store). */
const logLines: Array<string> = []
const capture = Logger.make(({ cause, logLevel, message }) => {
  const text = Array.isArray(message) ? message.map(String).join(" ") : String(message)
  logLines.push(`${logLevel} ${text}${cause.reasons.length === 0 ? "" : ` ${Cause.pretty(cause)}`}`)
})
/** Runs a test body with the capturing logger installed (and the lines of earlier tests forgotten). */
const logged = <A, E>(body: Effect.Effect<A, E, Scope.Scope>): Promise<A> => {
  logLines.length = 0
  return run(body.pipe(Effect.provideService(References.MinimumLogLevel, "All"), Effect.provide(Logger.layer([capture]))))
}

/** Everything an error can show: message, `String`, JSON, the pretty Cause and the whole cause chain. */
const textsOf = (exit: Exit.Exit<unknown, unknown>): Array<string> => {
  if (Exit.isSuccess(exit)) return []
  const texts = [Cause.pretty(exit.cause)]
  for (let e: unknown = Cause.squash(exit.cause), i = 0; e !== undefined && i < 6; i++) {
    texts.push(String(e), e instanceof Error ? `${e.message}\n${e.stack ?? ""}` : "", JSON.stringify(e) ?? "")
    e = e instanceof Error ? e.cause : undefined
  }
  return texts
}

/** Fails naming where a secret showed up. */
const assertNoSecret = (texts: ReadonlyArray<string>, secrets: ReadonlyArray<string>, where: string): void => {
  for (const text of texts) {
    for (const secret of secrets) {
      assert.ok(!text.includes(secret), `${where}: a credential leaked into ${JSON.stringify(text.slice(0, 400))}`)
    }
  }
}

let groups = 0
/** The right credentials: the bus starts, and an event goes round (publish, JetStream, pull consumer, handler). */
const roundTrip = (config: NatsEventBusConfig) =>
  Effect.gen(function*() {
    const { bus: b, nats } = yield* bus({ source: "auth-test", ...config })
    const id = `rt-${++groups}`
    const handled: Array<string> = []
    yield* b.subscribe(AssetCreatedEvent, (event) => Effect.sync(() => void handled.push(event.assetId)), { group: `g_${id}` })
    yield* b.publish(AssetCreatedEvent, { assetId: id })
    yield* waitFor(() => handled.includes(id), `event ${id} is handled`)
    return { bus: b, nats, state: yield* SubscriptionRef.get(nats.state) }
  })

/**
 * A wrong credential or TLS set-up: the layer fails with `NatsError` of `reason`, at once although `connect.retry`
 * would try forever every 20 ms, and logs no "retrying" warning. Returns the texts that could show a secret.
 */
const refused = (config: NatsEventBusConfig, reason: NatsError["reason"], label: string) =>
  Effect.gen(function*() {
    const before = logLines.length
    const started = Date.now()
    const exit = yield* Effect.exit(Effect.scoped(Layer.build(NatsEventBus.layer({
      ...config,
      connect: { retry: Schedule.spaced("20 millis") }
    }))).pipe(Effect.timeout("10 seconds")))
    const error = Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
    assert.ok(error instanceof NatsError, `${label}: fails with a NatsError, got ${String(error)}`)
    assert.equal(error.reason, reason, `${label}: ${error.message}`)
    assert.match(error.message, /^cannot connect to NATS at /)
    const retried = logLines.slice(before).filter((line) => line.includes("retrying")).length
    assert.equal(retried, 0, `${label}: not retried (${retried} retry warnings)`)
    return { message: error.message, ms: Date.now() - started, texts: textsOf(exit) }
  })

test("nats auth: user/password (options and URL) and nkey seed: right ones work, wrong ones fail Authentication at once, never retried, never shown", { timeout: 60_000 }, () =>
  logged(Effect.gen(function*() {
    const password = "Al1ce-Pa55word-7c1"
    const wrongPassword = "Wr0ng-Pa55word-3d9"
    const alice = nkeyUser()
    const stranger = nkeyUser()
    const nats = yield* server({
      config: `authorization { users: [ { user: alice, password: "${password}" }, { nkey: ${alice.publicKey} } ] }`
    })
    const host = nats.url.replace("nats://", "")
    const secrets = [password, wrongPassword, alice.seed, stranger.seed]

    const ok = [
      { servers: nats.url, user: "alice", password: Redacted.make(password) },
      { servers: `nats://alice:${password}@${host}` },
      { servers: nats.url, nkeySeed: Redacted.make(alice.seed) }
    ]
    const states = []
    for (const config of ok) states.push((yield* roundTrip(config)).state)
    for (const state of states) assert.equal(state.status, "connected")
    assertNoSecret(states.map((s) => JSON.stringify(s)), secrets, "connection state")

    const wrong = [
      { label: "wrong password option", config: { servers: nats.url, user: "alice", password: Redacted.make(wrongPassword) } },
      { label: "wrong password in the URL", config: { servers: `nats://alice:${wrongPassword}@${host}` } },
      { label: "unknown nkey", config: { servers: nats.url, nkeySeed: Redacted.make(stranger.seed) } },
      { label: "no credential", config: { servers: nats.url } }
    ]
    const figures: Record<string, number> = {}
    for (const { config, label } of wrong) {
      const { message, ms, texts } = yield* refused(config, "Authentication", label)
      assert.match(message, /refused the credentials/)
      assertNoSecret(texts, secrets, label)
      figures[label] = ms
    }
    // The contrast: an unreachable server is retried on the schedule, each failure a warning; the URL's password is
    // masked in them.
    yield* Effect.promise(() => nats.stop())
    const exit = yield* Effect.exit(Effect.scoped(Layer.build(NatsEventBus.layer({
      servers: `nats://alice:${password}@${host}`,
      connect: { retry: Schedule.spaced("20 millis").pipe(Schedule.upTo({ times: 2 })) }
    }))))
    const unreachable = Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
    assert.ok(unreachable instanceof NatsError && unreachable.reason === "Connect", String(unreachable))
    const retries = logLines.filter((line) => line.includes("retrying")).length
    assert.equal(retries, 3, `a stopped server: three attempts (the first and two retries), each failure a warning: ${JSON.stringify(logLines)}`)
    assertNoSecret([...textsOf(exit), ...logLines], secrets, "logs")
    console.log(`auth user/password/nkey: ${JSON.stringify({ roundTrips: ok.length, refusedAfterMs: figures, unreachableRetryWarnings: retries })}`)
  })))

test("nats auth: a token works, a wrong token fails Authentication at once and is never shown", { timeout: 60_000 }, () =>
  logged(Effect.gen(function*() {
    const token = "t0ken-5ecret-a41f"
    const wrongToken = "t0ken-wr0ng-77b2"
    const nats = yield* server({ token })
    const { state } = yield* roundTrip({ servers: nats.url, token: Redacted.make(token) })
    yield* roundTrip({ servers: nats.url.replace("nats://", `nats://${token}@`) })
    const { message, texts } = yield* refused({ servers: nats.url, token: Redacted.make(wrongToken) }, "Authentication", "wrong token")
    const viaUrl = yield* refused({ servers: nats.url.replace("nats://", `nats://${wrongToken}@`) }, "Authentication", "wrong token in the URL")
    assertNoSecret([...texts, ...viaUrl.texts, JSON.stringify(state), ...logLines], [token, wrongToken], "token")
    console.log(`auth token: ${message}`)
  })))

test("nats auth: creds files (operator mode): a valid user works; an expired one and one of an unknown account fail Authentication; JWT and seed never shown", { timeout: 60_000 }, () =>
  logged(Effect.gen(function*() {
    const dir = yield* Effect.acquireRelease(Effect.promise(tempDir), (d) => Effect.promise(() => fs.rm(d, { recursive: true, force: true })))
    const op = yield* Effect.promise(() => operator(dir))
    const nats = yield* server({ config: op.config })
    const good = yield* Effect.promise(() => op.user("alice"))
    const expired = yield* Effect.promise(() => op.user("expired", { exp: Math.floor(Date.now() / 1000) - 60 }))
    // A user of another operator's account: well-formed, signed, and unknown to this server.
    const strangerDir = yield* Effect.acquireRelease(Effect.promise(tempDir), (d) => Effect.promise(() => fs.rm(d, { recursive: true, force: true })))
    const stranger = yield* Effect.promise(async () => (await operator(strangerDir)).user("mallory"))
    const secrets = [good, expired, stranger].flatMap((u) => [u.jwt, u.seed])

    const { state } = yield* roundTrip({ servers: nats.url, credsFile: good.credsFile })
    assertNoSecret([JSON.stringify(state)], secrets, "connection state")
    const messages = []
    for (const [label, user] of [["expired JWT", expired], ["unknown account", stranger]] as const) {
      const { message, texts } = yield* refused({ servers: nats.url, credsFile: user.credsFile }, "Authentication", label)
      assertNoSecret(texts, secrets, label)
      messages.push(message)
    }
    assertNoSecret(logLines, secrets, "logs")
    console.log(`auth creds: ${JSON.stringify(messages)}`)
  })))

test("nats auth: credentials that expire while connected close the connection (no endless reconnect); publishes then fail typed; nothing shows the JWT", { timeout: 60_000 }, () =>
  logged(Effect.gen(function*() {
    const dir = yield* Effect.acquireRelease(Effect.promise(tempDir), (d) => Effect.promise(() => fs.rm(d, { recursive: true, force: true })))
    const op = yield* Effect.promise(() => operator(dir))
    const nats = yield* server({ config: op.config })
    const user = yield* Effect.promise(() => op.user("shortlived", { exp: Math.floor(Date.now() / 1000) + 3 }))
    const { bus: b, nats: transport } = yield* roundTrip({
      servers: nats.url,
      credsFile: user.credsFile,
      reconnect: { wait: "100 millis", jitter: "10 millis" }
    })
    const started = Date.now()
    let state = yield* SubscriptionRef.get(transport.state)
    while (state.status !== "closed" && Date.now() - started < 20_000) {
      yield* Effect.sleep("100 millis")
      state = yield* SubscriptionRef.get(transport.state)
    }
    assert.equal(state.status, "closed", `the connection closes once the credentials expired: ${JSON.stringify(state)}`)
    // Which refusal comes last depends on timing: the server's "User Authentication Expired" on the live connection,
    // or its "Authorization Violation" for the expired JWT at a reconnect attempt. Either says why.
    assert.match(state.lastError ?? "", /Authentication Expired|Authorization Violation/i, `the state says why: ${JSON.stringify(state)}`)
    const exit = yield* Effect.exit(b.publish(AssetCreatedEvent, { assetId: "after-expiry" }))
    const error = Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
    assert.ok(error instanceof PublishError, `a publish fails typed: ${String(error)}`)
    assert.equal(error.retriable, false, `${error.reason}: ${error.message}`)
    assertNoSecret([...textsOf(exit), JSON.stringify(state), ...logLines], [user.jwt, user.seed], "expiry")
    console.log(`auth expiry: ${JSON.stringify({ closedAfterMs: Date.now() - started, state, publish: error.reason })}`)
  })))

test("nats auth: TLS with a CA made at test time works, mutual TLS too; a wrong CA, no TLS config and TLS against a plain server fail Tls at once", { timeout: 60_000 }, () =>
  logged(Effect.gen(function*() {
    const dir = yield* Effect.acquireRelease(Effect.promise(tempDir), (d) => Effect.promise(() => fs.rm(d, { recursive: true, force: true })))
    const certs = yield* Effect.promise(() => certificates(dir))
    const key = yield* Effect.promise(() => fs.readFile(certs.clientKeyFile, "utf8"))
    const tlsServer = yield* server({ tls: { certFile: certs.serverCertFile, keyFile: certs.serverKeyFile } })
    const { state } = yield* roundTrip({ servers: tlsServer.url, tls: { caFile: certs.caFile } })
    yield* roundTrip({ servers: tlsServer.url.replace("127.0.0.1", "localhost"), tls: { caFile: certs.caFile } })

    const mutual = yield* server({
      tls: { certFile: certs.serverCertFile, keyFile: certs.serverKeyFile, caFile: certs.caFile, verify: true }
    })
    yield* roundTrip({
      servers: mutual.url,
      tls: { caFile: certs.caFile, certFile: certs.clientCertFile, keyFile: certs.clientKeyFile }
    })

    // Without a client certificate the server ends the TLS 1.3 handshake silently; only the attempt's timeout ends the
    // wait (nats.js's default 20 s), so `connect.timeout` bounds it and the error points at the certificate.
    const noCertificate = yield* Effect.gen(function*() {
      const started = Date.now()
      const exit = yield* Effect.exit(Effect.scoped(Layer.build(NatsEventBus.layer({
        servers: mutual.url,
        tls: { caFile: certs.caFile },
        connect: { timeout: "1 second" }
      }))).pipe(Effect.timeout("15 seconds")))
      const error = Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
      assert.ok(error instanceof NatsError, `no client certificate: fails with a NatsError, got ${String(error)}`)
      assert.equal(error.reason, "Connect", error.message)
      assert.match(error.message, /timeout.*if the server requires a client certificate, set tls\.certFile and tls\.keyFile/i)
      assertNoSecret(textsOf(exit), [key], "no client certificate")
      return { message: error.message, ms: Date.now() - started }
    })
    // Generous for a loaded machine; without connect.timeout this takes nats.js's 20 s.
    assert.ok(noCertificate.ms < 12_000, `the attempt ended after ${noCertificate.ms} ms; connect.timeout is 1 s`)

    const plain = yield* server()
    const failures: Record<string, string> = {}
    for (
      const [label, config] of [
        ["untrusted CA", { servers: tlsServer.url, tls: { caFile: certs.otherCaFile } }],
        ["no TLS configured (system CAs)", { servers: tlsServer.url }],
        ["TLS against a plain server", { servers: plain.url, tls: { caFile: certs.caFile } }]
      ] as const
    ) {
      const { message, texts } = yield* refused(config, "Tls", label)
      assert.match(message, /TLS failure/)
      assertNoSecret(texts, [key], label)
      failures[label] = message
    }
    assertNoSecret([JSON.stringify(state), ...logLines], [key], "TLS")
    console.log(`auth tls: ${JSON.stringify({ ...failures, "mutual TLS without a client certificate": noCertificate })}`)
  })))

test("nats auth: a user without publish permission gets PublishError PermissionDenied (not retriable) and readiness over HTTP stays 200; a reconnect shows no password", { timeout: 60_000 }, () =>
  logged(Effect.gen(function*() {
    const password = "Publ1sher-Pa55-e5f"
    const nats = yield* server({
      config: [
        "authorization { users = [{ user: app, password: \"" + password + "\", permissions: {",
        "  publish: { allow: [\">\"], deny: [\"cqc.events.v1.asset_created\"] }, subscribe: { allow: [\">\"] } } }] }"
      ].join("\n")
    })
    const runtime = ManagedRuntime.make(NatsEventBus.layer({
      servers: nats.url.replace("nats://", `nats://app:${password}@`),
      source: "auth-test",
      reconnect: { wait: "100 millis", jitter: "10 millis" }
    }).pipe(Layer.provideMerge(Logger.layer([capture]))))
    yield* Effect.addFinalizer(() => Effect.promise(() => runtime.dispose()))
    const app = new Hono().route("/health", healthRouter({ runtime }))
    const http = yield* Effect.acquireRelease(
      Effect.callback<ReturnType<typeof serve> & { port: number }>((resume) => {
        const s = serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" }, (info) =>
          resume(Effect.succeed(Object.assign(s, { port: info.port }))))
      }),
      (s) => Effect.callback<void>((resume) => void s.close(() => resume(Effect.void)))
    )
    const bodies: Array<string> = []
    const ready = Effect.promise(async () => {
      const response = await fetch(`http://127.0.0.1:${http.port}/health/ready`)
      const body = await response.text()
      bodies.push(body)
      return response.status
    })

    assert.equal(yield* ready, 200, "ready before")
    const exit = yield* Effect.exit(Effect.promise(() => runtime.runPromiseExit(
      Effect.flatMap(Effect.service(EventBus.EventBus), (b) => b.publish(AssetCreatedEvent, { assetId: "denied" }))
    )).pipe(Effect.flatten))
    const error = Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
    assert.ok(error instanceof PublishError, `fails with a PublishError: ${String(error)}`)
    assert.equal(error.reason, "PermissionDenied", error.message)
    assert.equal(error.retriable, false)
    assert.equal(yield* ready, 200, "still ready after a denied publish: the connection is fine")

    // A reconnect (the server restarted) logs and records states; none of it shows the password.
    yield* Effect.promise(() => nats.restart())
    const reconnected = yield* Effect.promise(() => runtime.runPromise(Effect.gen(function*() {
      const started = Date.now()
      yield* (yield* EventBus.EventBus).check.pipe(Effect.retry(Schedule.spaced("100 millis")), Effect.timeout("15 seconds"))
      const state = yield* SubscriptionRef.get((yield* NatsTransport.NatsTransport).state)
      assert.ok(state.reconnects >= 1, `the bus reconnected: ${JSON.stringify(state)}`)
      bodies.push(JSON.stringify(state))
      return Date.now() - started
    })))
    assert.equal(yield* ready, 200, "ready after the reconnect")
    const full = yield* Effect.promise(async () => {
      const text = await (await fetch(`http://127.0.0.1:${http.port}/health`)).text()
      bodies.push(text)
      return text
    })
    assertNoSecret([...textsOf(exit), ...bodies, full, ...logLines], [password], "publish permission")
    console.log(`auth publish permission: ${JSON.stringify({ reason: error.reason, retriable: error.retriable, readyAfterReconnectMs: reconnected, logLines: logLines.length })}`)
  })))

test("nats auth: a user who may not consume (no consumer create, no pull request, no inbox) gets SubscribeError PermissionDenied at once, not a silent subscription", { timeout: 60_000 }, () =>
  logged(Effect.gen(function*() {
    const user = (name: string, permissions: string) => `{ user: ${name}, password: pw-${name}, permissions: ${permissions} }`
    const nats = yield* server({
      config: `authorization { users: [
        ${user("admin", "{}")}
        ${user("nocreate", `{ publish: { allow: [">"], deny: ["$JS.API.CONSUMER.CREATE.>", "$JS.API.CONSUMER.DURABLE.CREATE.>"] }, subscribe: { allow: [">"] } }`)}
        ${user("nopull", `{ publish: { allow: [">"], deny: ["$JS.API.CONSUMER.MSG.NEXT.>"] }, subscribe: { allow: [">"] } }`)}
        ${user("noinbox", `{ publish: { allow: [">"] }, subscribe: { allow: ["_INBOX.*.*"] } }`)}
        ${user("notopic", `{ publish: { allow: [">"] }, subscribe: { allow: [">"], deny: ["cqc.events.v1.>"] } }`)}
      ] }`
    })
    // The stream exists (made by a user who may), the restricted users only consume it.
    yield* roundTrip({ servers: nats.url, user: "admin", password: Redacted.make("pw-admin") })
    const timings: Record<string, number> = {}
    for (const name of ["nocreate", "nopull", "noinbox"]) {
      const { bus: b } = yield* bus({ servers: nats.url, user: name, password: Redacted.make(`pw-${name}`), provisioning: "skip" })
      const started = Date.now()
      const exit = yield* Effect.exit(b.subscribe(AssetCreatedEvent, () => Effect.void, { group: `g_${name}` }).pipe(Effect.timeout("10 seconds")))
      const error = Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
      assert.ok(error instanceof SubscribeError, `${name}: fails with a SubscribeError, got ${String(error)}`)
      assert.equal(error.reason, "PermissionDenied", `${name}: ${error.message}`)
      assert.match(error.message, /Permissions Violation/)
      assertNoSecret(textsOf(exit), [`pw-${name}`], name)
      timings[name] = Date.now() - started
    }
    // JetStream delivers to the consumer's inbox, never on the topic: subscribe permission on the topic is not needed.
    yield* roundTrip({ servers: nats.url, user: "notopic", password: Redacted.make("pw-notopic"), provisioning: "skip" })
    console.log(`auth subscribe permission: ${JSON.stringify({ deniedAfterMs: timings, withoutTopicPermission: "works" })}`)
  })))
