// Request-reply validates its options where they are given, on the in-memory backend: a bad client or call option
// fails each call with RequestFailed InvalidOptions, a bad server option fails `serve` with ServeError
// InvalidOptions; each names the option and its range, and each boundary value is accepted.
import { MemoryRequestReply, RequestFailed, ServeError } from "@cqbus/rpc"
import { runScoped } from "@cqbus/testkit"
import { makeControlServiceClient, serveControlService } from "@cqbus/testkit/control"
import { Effect } from "effect"
import assert from "node:assert/strict"
import { test } from "node:test"

test("options: request-reply refuses a bad timeout or queue with RequestFailed / ServeError InvalidOptions", () =>
  runScoped(MemoryRequestReply.layer(), Effect.gen(function*() {
    const served = yield* Effect.flip(serveControlService({
      getStatus: () => Effect.succeed({ instance: "i", consumers: [] }),
      pauseConsumer: () => Effect.succeed({})
    }, { queue: "a b" }))
    assert.ok(served instanceof ServeError && served.reason === "InvalidOptions")
    assert.match(served.message, /queue must be a name without whitespace or wildcards, got "a b"/)
    const drain = yield* Effect.flip(serveControlService({
      getStatus: () => Effect.succeed({ instance: "i", consumers: [] }),
      pauseConsumer: () => Effect.succeed({})
    }, { drainTimeout: NaN }))
    assert.ok(drain instanceof ServeError && /drainTimeout must be a duration/.test(drain.message))
    yield* serveControlService({
      getStatus: () => Effect.succeed({ instance: "i", consumers: [] }),
      pauseConsumer: () => Effect.succeed({})
    }, { queue: "control.workers", drainTimeout: 0 })

    const badClient = yield* makeControlServiceClient({ timeout: -1 })
    const error = yield* Effect.flip(badClient.getStatus({}))
    assert.ok(error instanceof RequestFailed && error.reason === "InvalidOptions")
    assert.match(error.message, /client\.timeout must be a duration from 1ms to 1h, got -1ms/)
    const client = yield* makeControlServiceClient({ timeout: "1 hours" })
    const call = yield* Effect.flip(client.getStatus({}, { timeout: "0 millis" }))
    assert.ok(call instanceof RequestFailed && /timeout must be a duration from 1ms to 1h, got "0 millis"/.test(call.message))
    assert.equal((yield* client.getStatus({})).instance, "i")
  })))
