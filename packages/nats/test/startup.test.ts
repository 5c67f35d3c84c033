// Start-up of the NATS backend and its errors: every failure is one tagged `NatsError` with a `reason` that prints as
// `NatsError: …` and says its cause once; an overlap names the other stream; the first connection can be retried on a
// Schedule (a server started late); request-reply runs over a bare connection, without JetStream.
import { EventBus } from "@cqbus/core"
import { NatsConnection, NatsError, NatsEventBus, NatsRequestReply } from "@cqbus/nats"
import { RequestReply } from "@cqbus/rpc"
import { jetstreamManager } from "@nats-io/jetstream"
import { type NatsConnection as NatsClient } from "@nats-io/nats-core"
import { connect } from "@nats-io/transport-node"
import { Cause, Context, Duration, Effect, Exit, Fiber, Layer, Redacted, Schedule } from "effect"
import assert from "node:assert/strict"
import { test } from "node:test"
import { failureOf } from "@cqbus/testkit"
import { buildExit, run, server } from "./support/nats.ts"

/** The typed failure of an exit, which must be a `NatsError`. */
const natsError = <A>(exit: Exit.Exit<A, unknown>): NatsError => {
  const found = failureOf(exit)
  assert.ok(found instanceof NatsError, `a NatsError, got ${Cause.pretty((exit as Exit.Failure<A, unknown>).cause)}`)
  return found
}

const occurrences = (text: string, part: string): number => text.split(part).length - 1

/** A server whose only account has no JetStream: core NATS works, `$JS.API` does not answer. */
const withoutJetStream = () =>
  server({ config: `accounts: { APP: { users: [ { user: "app", password: "app-pw" } ] } }` })

test("nats startup: a refused connection is a NatsError Connect that prints as `NatsError: …` with its cause once", { timeout: 30_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    yield* Effect.promise(() => nats.stop())
    const exit = yield* buildExit({ servers: nats.url })
    const error = natsError(exit)
    assert.equal(error.reason, "Connect")
    assert.match(error.message, new RegExp(`^cannot connect to NATS at ${nats.url}: `))
    assert.equal(String(error), `NatsError: ${error.message}`)
    const pretty = Cause.pretty(Exit.isFailure(exit) ? exit.cause : Cause.empty)
    console.log(`connect: ${pretty.split("\n")[0]}`)
    assert.equal(pretty.split("\n")[0], `NatsError: ${error.message}`)
    assert.equal(occurrences(pretty, "refused"), 1, `the cause is said once:\n${pretty}`)
    // Users handle it by tag.
    const handled = yield* Effect.scoped(Layer.build(NatsEventBus.layer({ servers: nats.url }))).pipe(
      Effect.as("built"),
      Effect.catchTag("NatsError", (e) => Effect.succeed(`caught ${e.reason}`))
    )
    assert.equal(handled, "caught Connect")
  })))

test("nats startup: an account without JetStream is a NatsError JetStreamUnavailable", { timeout: 30_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* withoutJetStream()
    const error = natsError(yield* buildExit({ servers: nats.url, user: "app", password: Redacted.make("app-pw") }))
    console.log(`jetstream: ${String(error)}`)
    assert.equal(error.reason, "JetStreamUnavailable")
    assert.match(error.message, /JetStream is not available/)
    assert.ok(!error.message.includes("app-pw"))
  })))

test("nats startup: subjects overlapping another stream fail Provision naming that stream and its subjects", { timeout: 30_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const nc = yield* Effect.acquireRelease(
      Effect.promise(() => connect({ servers: nats.url })),
      (nc: NatsClient) => Effect.promise(() => nc.close())
    )
    const jsm = yield* Effect.promise(() => jetstreamManager(nc))
    yield* Effect.promise(() => jsm.streams.add({ name: "LEGACY", subjects: ["cqc.events.>", "legacy.x"] }))
    const error = natsError(yield* buildExit({ servers: nats.url, stream: { name: "MINE" } }))
    console.log(`overlap: ${String(error)}`)
    assert.equal(error.reason, "Provision")
    assert.equal(error.stream, "MINE")
    assert.equal(error.code, 10065)
    assert.match(error.message, /overlap with the existing stream LEGACY \(subjects cqc\.events\.>, legacy\.x\)/)
    assert.match(error.message, /stream\.subjects/)
  })))

test("nats startup: validateOnly differences are a NatsError Provision", { timeout: 30_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    yield* Effect.scoped(Layer.build(NatsEventBus.layer({ servers: nats.url })))
    const error = natsError(
      yield* buildExit({ servers: nats.url, provisioning: "validateOnly", stream: { maxMessages: 7 } })
    )
    assert.equal(error.reason, "Provision")
    assert.equal(error.stream, "CQC_EVENTS")
    assert.match(error.message, /max_msgs/)
  })))

test("nats startup: with connect.retry the first connection waits for a server started late", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    yield* Effect.promise(() => nats.stop())
    const started = Date.now()
    const building = yield* Effect.forkChild(
      Effect.scoped(Effect.gen(function*() {
        const context = yield* Layer.build(
          NatsEventBus.layer({ servers: nats.url, connect: { retry: Schedule.spaced("200 millis") } })
        )
        yield* Context.get(context, EventBus.EventBus).check
        return Date.now()
      }))
    )
    // The layer is already trying (and failing) while the server is down.
    yield* Effect.sleep("2 seconds")
    assert.equal(building.pollUnsafe(), undefined, "the build is still waiting for the server")
    yield* Effect.promise(() => nats.restart())
    const connectedAt = yield* Fiber.join(building).pipe(Effect.timeout("30 seconds"))
    assert.ok(connectedAt - started < 40_000)

    // Without it, start-up fails fast as before (and a bounded schedule gives up with the last Connect error).
    yield* Effect.promise(() => nats.stop())
    const bounded = natsError(
      yield* buildExit({ servers: nats.url, connect: { retry: Schedule.spaced("50 millis").pipe(Schedule.upTo({ times: 2 })) } })
    )
    assert.equal(bounded.reason, "Connect")
  })))

test("nats startup: request-reply over NatsConnection.layer needs no JetStream", { timeout: 30_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* withoutJetStream()
    const connection = NatsConnection.layer({ servers: nats.url, user: "app", password: Redacted.make("app-pw") })
    const context = yield* Layer.build(NatsRequestReply.layer.pipe(Layer.provideMerge(connection)))
    const rr = Context.get(context, RequestReply.RequestReply)
    yield* rr.serve(
      "svc.echo",
      { queue: undefined, drainTimeout: Duration.seconds(1) },
      (request) => Effect.succeed({ body: new Uint8Array([...request.body, 42]), headers: {} })
    )
    const reply = yield* rr.request("svc.echo", new Uint8Array([1, 2]), { headers: {}, timeout: Duration.seconds(5) })
    assert.deepEqual([...reply.body], [1, 2, 42])
    // The bus layer on the same server cannot start: this test really ran without JetStream.
    const error = natsError(yield* buildExit({ servers: nats.url, user: "app", password: Redacted.make("app-pw") }))
    assert.equal(error.reason, "JetStreamUnavailable")
  })))
