/**
 * A ready-made server of the example `ControlService`, so request-reply tests on every backend (memory in
 * `@cqbus/rpc`, NATS in `@cqbus/nats`) serve the same answers and assert the same things.
 *
 * @module
 */
import { RpcError } from "@cqbus/rpc"
import { Effect } from "effect"
import type { ControlServiceHandlers } from "./gen/cqc/control/v1/control_rpc.ts"

/**
 * The handlers of a server instance named `instance`: `getStatus` reports one consumer (`<prefix>orders`, paused
 * when the caller sent `x-operator: ops`, with `handled` handled), `pauseConsumer` fails with `RpcError` 404 for the
 * name `"missing"` and succeeds otherwise.
 *
 * @since 0.1.0
 * @category constructors
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
