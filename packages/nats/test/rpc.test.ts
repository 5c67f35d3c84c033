// Typed request-reply over core NATS with the generated ControlService client and server (protoc-gen-cqbus output in
// @cqbus/testkit/control), against a real nats-server per test: typed request, response and RpcError (in the NATS
// micro error headers); no server means NoResponders at once; a slow server means RequestTimeout; a queue group splits
// requests; closing the server's scope unsubscribes it; and the wire is what a plain nats.js (or Go) peer sends and
// reads: bare protobuf bodies and `Nats-Service-Error-Code` / `Nats-Service-Error`.
import { create, fromBinary, toBinary } from "@bufbuild/protobuf"
import { NatsEventBus, NatsRequestReply } from "@cqbus/nats"
import { NoResponders, RequestReply, RequestTimeout, RpcError, RpcErrorHeaders } from "@cqbus/rpc"
import { failureOf } from "@cqbus/testkit"
import {
  controlHandlers,
  type ControlServiceHandlers,
  ControlServiceSubjects,
  GetStatusRequestSchema,
  GetStatusResponseSchema,
  makeControlServiceClient,
  PauseConsumerRequestSchema,
  serveControlService
} from "@cqbus/testkit/control"
import { headers as natsHeaders, type NatsConnection } from "@nats-io/nats-core"
import { connect } from "@nats-io/transport-node"
import { Context, Duration, Effect, Fiber, Layer } from "effect"
import assert from "node:assert/strict"
import { test } from "node:test"
import { inScope, run, server } from "./support/nats.ts"
import { rawConnect } from "./support/raw.ts"

/** A plain nats.js connection, closed with the test's scope. */
const plain = (url: string) =>
  Effect.acquireRelease(
    Effect.promise(() => connect({ servers: url })),
    (nc: NatsConnection) => Effect.promise(() => nc.close())
  )

/** `RequestReply` over a plain connection of its own (another process, as far as NATS can tell). */
const port = (url: string) =>
  Effect.map(plain(url), (nc) => Context.make(RequestReply.RequestReply, NatsRequestReply.make(nc)))

const handlers = (instance: string) => controlHandlers(instance, 7n)

test("nats rpc: a generated client and server talk over NATS with typed request, response, headers and RpcError", { timeout: 30_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    // The server shares the event bus's connection (NatsRequestReply.layer over NatsEventBus.layer).
    const serverSide = yield* Layer.build(NatsRequestReply.layer.pipe(Layer.provideMerge(NatsEventBus.layer({ servers: nats.url }))))
    yield* serveControlService(handlers("worker-1")).pipe(Effect.provideContext(serverSide))

    const control = yield* makeControlServiceClient({ headers: { "x-operator": "ops" } }).pipe(
      Effect.provideContext(yield* port(nats.url))
    )
    const status = yield* control.getStatus({ prefix: "billing-" })
    assert.equal(status.$typeName, "cqc.control.v1.GetStatusResponse")
    assert.equal(status.instance, "worker-1")
    assert.deepEqual(status.consumers.map((c) => [c.name, c.paused, c.handled]), [["billing-orders", true, 7n]])
    assert.equal((yield* control.pauseConsumer({ name: "orders" })).changed, true)

    const error = failureOf(yield* Effect.exit(control.pauseConsumer({ name: "missing" })))
    assert.ok(error instanceof RpcError, `an RpcError, got ${String(error)}`)
    assert.equal(error.code, "404")
    assert.equal(error.message, "no consumer missing")
  })))

test("nats rpc: a call with no server running fails fast with a typed NoResponders", { timeout: 30_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const control = yield* makeControlServiceClient({ timeout: "20 seconds" }).pipe(Effect.provideContext(yield* port(nats.url)))
    const started = Date.now()
    const error = failureOf(yield* Effect.exit(control.getStatus({})))
    const elapsed = Date.now() - started
    assert.ok(error instanceof NoResponders, `NoResponders, got ${String(error)}`)
    assert.equal(error.subject, "cqc.control.v1.control_service.get_status")
    assert.ok(elapsed < 10_000, `it fails at once, not after the 20 s timeout (took ${elapsed} ms)`)
  })))

test("nats rpc: a server slower than the timeout gives a typed RequestTimeout after the timeout", { timeout: 30_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    let handlerStarted = false
    yield* serveControlService({
      ...handlers("slow"),
      getStatus: () => Effect.andThen(Effect.sync(() => void (handlerStarted = true)), Effect.as(Effect.sleep("20 seconds"), { instance: "slow" }))
    }, {
      drainTimeout: "100 millis"
    }).pipe(Effect.provideContext(yield* port(nats.url)))
    const control = yield* makeControlServiceClient().pipe(Effect.provideContext(yield* port(nats.url)))
    const started = Date.now()
    const error = failureOf(yield* Effect.exit(control.getStatus({}, { timeout: "300 millis" })))
    const elapsed = Date.now() - started
    assert.ok(error instanceof RequestTimeout, `RequestTimeout, got ${String(error)}`)
    // Not a wall-clock lower bound (a loaded machine stretches time both ways): the call's own timeout ended it, and
    // only after the request had reached the slow handler; the upper bound only says it did not wait for the handler.
    assert.match(error.message, /timed out after 300ms/)
    assert.ok(handlerStarted, "the request reached the handler before the client gave up")
    assert.ok(elapsed < 10_000, `it gives up at its timeout, not when the handler answers (took ${elapsed} ms)`)
  })))

test("nats rpc: servers in one queue group split the requests; a closed server no longer answers", { timeout: 30_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const counts = { a: 0, b: 0 }
    const counting = (name: "a" | "b"): ControlServiceHandlers => ({
      ...handlers(name),
      getStatus: () => Effect.sync(() => (counts[name]++, { instance: name }))
    })
    yield* serveControlService(counting("a")).pipe(Effect.provideContext(yield* port(nats.url)))
    const b = yield* inScope(serveControlService(counting("b")).pipe(Effect.provideContext(yield* port(nats.url))))
    const control = yield* makeControlServiceClient().pipe(Effect.provideContext(yield* port(nats.url)))
    for (let i = 0; i < 40; i++) yield* control.getStatus({})
    assert.equal(counts.a + counts.b, 40, `each request was handled once: ${JSON.stringify(counts)}`)
    assert.ok(counts.a > 0 && counts.b > 0, `both members took requests: ${JSON.stringify(counts)}`)

    yield* b.close
    const before = counts.b
    for (let i = 0; i < 10; i++) assert.equal((yield* control.getStatus({})).instance, "a")
    assert.equal(counts.b, before, "the closed server got nothing")
  })))

test("nats rpc: on the wire, a plain nats.js peer (as a Go service) calls and serves the same subjects", { timeout: 30_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const nc = yield* plain(nats.url)

    // A plain client calls the generated server: a bare protobuf request, a protobuf reply, micro error headers.
    const ts = yield* inScope(serveControlService(handlers("ts-worker")).pipe(Effect.provideContext(yield* port(nats.url))))
    const body = toBinary(GetStatusRequestSchema, create(GetStatusRequestSchema, { prefix: "go-" }))
    const ok = yield* Effect.promise(() => nc.request(ControlServiceSubjects.getStatus, body, { timeout: 5_000 }))
    assert.equal(ok.headers?.get(RpcErrorHeaders.code) ?? "", "", "no error header on success")
    const decoded = fromBinary(GetStatusResponseSchema, ok.data)
    assert.equal(decoded.instance, "ts-worker")
    assert.equal(decoded.consumers[0]?.name, "go-orders")
    const missing = toBinary(PauseConsumerRequestSchema, create(PauseConsumerRequestSchema, { name: "missing" }))
    const failed = yield* Effect.promise(() => nc.request(ControlServiceSubjects.pauseConsumer, missing, { timeout: 5_000 }))
    assert.equal(failed.headers?.get("Nats-Service-Error-Code"), "404")
    assert.equal(failed.headers?.get("Nats-Service-Error"), "no consumer missing")
    assert.equal(failed.data.length, 0, "an error reply has an empty body")

    yield* ts.close

    // A plain server (a Go micro service would answer the same way) serves the generated client.
    const other = yield* plain(nats.url)
    const sub = other.subscribe("cqc.control.v1.control_service.pause_consumer", {
      queue: "go",
      callback: (_, msg) => {
        const request = fromBinary(PauseConsumerRequestSchema, msg.data)
        if (request.name === "locked") {
          const h = natsHeaders()
          h.set("Nats-Service-Error-Code", "409")
          h.set("Nats-Service-Error", "consumer locked by go")
          msg.respond(new Uint8Array(0), { headers: h })
        } else {
          msg.respond(new Uint8Array([0x08, 0x01])) // PauseConsumerResponse{changed: true}
        }
      }
    })
    yield* Effect.promise(() => other.flush())
    const goServed = yield* Effect.gen(function*() {
      const control = yield* makeControlServiceClient()
      const changed = yield* control.pauseConsumer({ name: "x" })
      const error = failureOf(yield* Effect.exit(control.pauseConsumer({ name: "locked" })))
      return { changed, error }
    }).pipe(Effect.provideContext(Context.make(RequestReply.RequestReply, NatsRequestReply.make(nc))))
    sub.unsubscribe()
    assert.equal(goServed.changed.changed, true)
    assert.ok(goServed.error instanceof RpcError, `an RpcError, got ${String(goServed.error)}`)
    assert.equal(goServed.error.code, "409")
    assert.equal(goServed.error.message, "consumer locked by go")
  })))

test("nats rpc: a request or a reply whose header value holds a bare CR (from a raw peer) is served and read, not thrown on", { timeout: 30_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const nc = yield* plain(nats.url)
    const rr = NatsRequestReply.make(nc)
    const raw = yield* Effect.acquireRelease(Effect.promise(() => rawConnect(nats.url)), (r) => Effect.sync(() => r.close()))
    const encoder = new TextEncoder()
    // nats.js refuses to build this block, and its decoder throws on it; a Go peer or a hostile client can send it.
    const hostile = encoder.encode("NATS/1.0\r\nce-id: a\rb\r\nx-peer: raw\r\n\r\n")
    const waitUntil = (condition: () => boolean, what: string) =>
      Effect.gen(function*() {
        const deadline = Date.now() + 10_000
        while (!condition()) {
          if (Date.now() > deadline) return yield* Effect.die(new Error(`timed out waiting until ${what}`))
          yield* Effect.sleep("10 millis")
        }
      })

    // The cqbus server gets the hostile request and answers it.
    const seen: Array<Record<string, string>> = []
    yield* rr.serve("rpc.hostile.serve", { queue: undefined, drainTimeout: Duration.seconds(1) }, (request) =>
      Effect.sync(() => {
        seen.push({ ...request.headers })
        return { body: encoder.encode("served"), headers: {} }
      }))
    const inbox = yield* Effect.promise(() => raw.subscribe("_INBOX.raw.hostile"))
    yield* Effect.promise(() => raw.publish("rpc.hostile.serve", hostile, encoder.encode("ping"), "_INBOX.raw.hostile"))
    yield* waitUntil(() => raw.messages(inbox).length === 1, "the hostile request is answered")
    assert.equal(new TextDecoder().decode(raw.messages(inbox)[0]!.body), "served")
    assert.equal(seen[0]?.["ce-id"], "a\rb", "the value is read whole, bare CR included")
    assert.equal(seen[0]?.["x-peer"], "raw")

    // The cqbus client gets a hostile reply and reads it.
    const requests = yield* Effect.promise(() => raw.subscribe("rpc.hostile.reply"))
    const answered = yield* Effect.forkChild(Effect.gen(function*() {
      yield* waitUntil(() => raw.messages(requests).length === 1, "the request reaches the raw peer")
      const reply = raw.messages(requests)[0]!.reply!
      yield* Effect.promise(() => raw.publish(reply, hostile, encoder.encode("pong")))
    }))
    const reply = yield* rr.request("rpc.hostile.reply", encoder.encode("ping"), { headers: {}, timeout: Duration.seconds(5) })
    yield* Fiber.join(answered)
    assert.equal(new TextDecoder().decode(reply.body), "pong")
    assert.equal(reply.headers["ce-id"], "a\rb")
  })))
