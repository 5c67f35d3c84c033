// The ControlService handlers and the failure helper shared by the request-reply tests on memory
// (test/codegen.memory.test.ts) and on NATS (packages/nats/test/rpc.test.ts). Not a test file itself (no `.test.ts`).
import { RpcError } from "@cqbus/core"
import type { ControlServiceHandlers } from "@cqbus/testkit/control"
import { Cause, Effect, Exit } from "effect"
import assert from "node:assert/strict"

/**
 * A server instance named `instance`: `getStatus` reports one consumer (paused when the caller sent
 * `x-operator: ops`, with `handled` handled), `pauseConsumer` fails with RpcError 404 for the name "missing".
 */
export const controlHandlers = (instance: string, handled: bigint): ControlServiceHandlers => ({
  getStatus: (request, info) =>
    Effect.succeed({
      instance,
      consumers: [{ name: `${request.prefix}orders`, paused: info.headers["x-operator"] === "ops", handled }]
    }),
  pauseConsumer: (request) =>
    request.name === "missing"
      ? Effect.fail(new RpcError({ code: "404", message: `no consumer ${request.name}` }))
      : Effect.succeed({ changed: true })
})

/** The typed failure of an exit that must have failed. */
export const failureOf = <A, E>(exit: Exit.Exit<A, E>): E => {
  assert.ok(Exit.isFailure(exit), "the call fails")
  const found = Cause.findErrorOption(exit.cause)
  assert.ok(found._tag === "Some", `a typed failure, got ${Cause.pretty(exit.cause)}`)
  return found.value
}
