// Request-reply on the in-memory backend, through the generated ControlService client and server
// (@cqbus/testkit/control) over `MemoryRequestReply.layer()`: an RpcError travels back, no server means NoResponders
// at once, a slow server means RequestTimeout, queue groups split requests, a defect or an undecodable request gets an
// error answer.
import { MemoryRequestReply, NoResponders, RequestReply, RequestTimeout, RpcError, RpcErrorHeaders } from "@cqbus/rpc"
import { failureOf, runScoped, waitUntil } from "@cqbus/testkit"
import {
  controlHandlers,
  type ControlServiceHandlers,
  ControlServiceSubjects,
  makeControlServiceClient,
  serveControlService
} from "@cqbus/testkit/control"
import { Cause, Duration, Effect, Fiber, Layer, Logger } from "effect"
import { TestClock } from "effect/testing"
import assert from "node:assert/strict"
import { test } from "node:test"

const layer = MemoryRequestReply.layer()

const handlers = (instance: string) => controlHandlers(instance, 3n)

test("rpc memory: an RpcError from the handler reaches the client as the same typed error", () =>
  runScoped(layer, Effect.gen(function*() {
    yield* serveControlService(handlers("worker-1"))
    const control = yield* makeControlServiceClient()
    const error = failureOf(yield* Effect.exit(control.pauseConsumer({ name: "missing" })))
    assert.ok(error instanceof RpcError, `an RpcError, got ${String(error)}`)
    assert.equal(error.code, "404")
    assert.equal(error.message, "no consumer missing")
  })))

test("rpc memory: a call with no server running fails at once with NoResponders", () =>
  runScoped(layer, Effect.gen(function*() {
    const control = yield* makeControlServiceClient({ timeout: "30 seconds" })
    const started = Date.now()
    const error = failureOf(yield* Effect.exit(control.getStatus({})))
    assert.ok(Date.now() - started < 10_000, "it does not wait for the 30 s timeout")
    assert.ok(error instanceof NoResponders, `NoResponders, got ${String(error)}`)
    assert.equal(error.subject, ControlServiceSubjects.getStatus)
  }), "real"))

test("rpc memory: a server slower than the call's timeout gives RequestTimeout (on the Effect clock)", () =>
  runScoped(layer, Effect.gen(function*() {
    let reached = false
    yield* serveControlService({
      ...handlers("slow"),
      getStatus: () => Effect.as(Effect.andThen(Effect.sync(() => (reached = true)), Effect.sleep("10 seconds")), { instance: "slow" })
    })
    const control = yield* makeControlServiceClient()
    const fiber = yield* Effect.forkChild(Effect.exit(control.getStatus({}, { timeout: "2 seconds" })))
    // Until the request has reached the server (its timeout timer started before it was sent).
    for (let i = 0; !reached; i++) {
      assert.ok(i < 10_000, "the request reaches the server")
      yield* Effect.yieldNow
    }
    yield* TestClock.adjust("1999 millis")
    assert.equal(fiber.pollUnsafe(), undefined, "still waiting before the timeout")
    yield* TestClock.adjust("2 millis")
    const error = failureOf(yield* Fiber.join(fiber))
    assert.ok(error instanceof RequestTimeout, `RequestTimeout, got ${String(error)}`)
    assert.match(error.message, /cqc\.control\.v1\.control_service\.get_status timed out after 2s/)
    // The server keeps working on a request its caller gave up on (as on NATS); let it finish so the scope can close.
    yield* TestClock.adjust("10 seconds")
  })))

test("rpc memory: servers in one queue group split the requests; another group gets every request too", () =>
  runScoped(layer, Effect.gen(function*() {
    const counts = { a: 0, b: 0, audit: 0 }
    const counting = (name: keyof typeof counts): ControlServiceHandlers => ({
      ...handlers(name),
      getStatus: () => Effect.sync(() => (counts[name]++, { instance: name }))
    })
    yield* serveControlService(counting("a"))
    yield* serveControlService(counting("b"))
    yield* serveControlService(counting("audit"), { queue: "audit" })
    const control = yield* makeControlServiceClient()
    for (let i = 0; i < 10; i++) yield* control.getStatus({})
    yield* waitUntil(() => counts.audit === 10, "the audit group saw every request")
    assert.equal(counts.a + counts.b, 10, `the default group handled each request once: ${JSON.stringify(counts)}`)
    assert.ok(counts.a > 0 && counts.b > 0, `both members of the default group took requests: ${JSON.stringify(counts)}`)
  })))

test("rpc memory: a handler defect is answered with code 500 and logged, an undecodable request with code 400", () => {
  const logged: Array<{ readonly level: string; readonly message: ReadonlyArray<unknown>; readonly cause: Cause.Cause<unknown> }> = []
  const capture = Logger.make(({ cause, logLevel, message }) => {
    logged.push({ level: logLevel, message: Array.isArray(message) ? message : [message], cause })
  })
  return runScoped(Layer.mergeAll(layer, Logger.layer([capture])), Effect.gen(function*() {
    yield* serveControlService({ ...handlers("x"), getStatus: () => Effect.die(new Error("secret detail")) })
    const control = yield* makeControlServiceClient()
    const defect = failureOf(yield* Effect.exit(control.getStatus({})))
    assert.ok(defect instanceof RpcError)
    assert.equal(defect.code, "500")
    assert.equal(defect.message, "internal error in cqc.control.v1.ControlService.GetStatus")
    assert.ok(!defect.message.includes("secret detail"), "the defect's details stay on the server")
    const errors = logged.filter((entry) => entry.level === "Error")
    assert.equal(errors.length, 1, "the server logs the defect once")
    assert.equal(errors[0]!.message[0], "cqc.control.v1.ControlService.GetStatus: the handler failed unexpectedly")
    assert.match(Cause.pretty(errors[0]!.cause), /secret detail/, "with its cause")

    // The raw port, as a client in another language would send: bytes that are no PauseConsumerRequest.
    const port = yield* RequestReply.RequestReply
    const reply = yield* port.request(ControlServiceSubjects.pauseConsumer, new Uint8Array([0xff, 0xff, 0xff]), {
      headers: {},
      timeout: Duration.seconds(5)
    }).pipe(Effect.orDie)
    assert.equal(reply.headers[RpcErrorHeaders.code], "400")
    assert.match(reply.headers[RpcErrorHeaders.message] ?? "", /not a valid cqc\.control\.v1\.PauseConsumerRequest/)
    assert.equal(reply.body.length, 0)
  }))
})
