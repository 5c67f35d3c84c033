/**
 * The byte-level request-reply port: what a backend implements so the typed client (`makeRpcClient`) and server
 * (`serveRpc`) run on it. `@cqbus/nats` provides it over core NATS (`NatsRequestReply.layer`); `layerMemory()` here
 * runs it in process.
 *
 * @module
 */
import type { Headers } from "@cqbus/core"
import { Context, type Duration, type Effect, Layer, type Scope } from "effect"
import type { NoResponders, RequestFailed, RequestTimeout, ServeError } from "./Errors.ts"
import * as memory from "./internal/memory.ts"

/**
 * A request as a server receives it.
 *
 * @since 0.1.0
 * @category models
 */
export interface IncomingRequest {
  readonly subject: string
  readonly body: Uint8Array
  readonly headers: Headers
}

/**
 * A reply: a body and headers (`RpcErrorHeaders` for an error reply).
 *
 * @since 0.1.0
 * @category models
 */
export interface Reply {
  readonly body: Uint8Array
  readonly headers: Headers
}

/**
 * The port a backend implements. `request` sends one request and waits for the first reply; it fails with
 * `NoResponders` when nothing serves the subject and `RequestTimeout` when no reply came in time. `serve` answers the
 * requests of a subject until its scope closes; servers sharing a `queue` split the requests (each goes to one of
 * them). Closing the scope stops taking requests, lets running handlers finish within `drainTimeout` and interrupts
 * the rest (their requesters time out).
 *
 * @since 0.1.0
 * @category models
 */
export interface RequestReplyShape {
  /** A short backend name (`"memory"`, `"nats"`). */
  readonly name: string
  readonly request: (
    subject: string,
    body: Uint8Array,
    options: { readonly headers: Headers; readonly timeout: Duration.Duration }
  ) => Effect.Effect<Reply, NoResponders | RequestTimeout | RequestFailed>
  /** Succeeds once the server is subscribed, so requests sent afterwards reach it. */
  readonly serve: (
    subject: string,
    options: { readonly queue: string | undefined; readonly drainTimeout: Duration.Duration },
    handle: (request: IncomingRequest) => Effect.Effect<Reply>
  ) => Effect.Effect<void, ServeError, Scope.Scope>
}

const RequestReplyKey: Context.ServiceClass<RequestReply, "@cqbus/rpc/RequestReply", RequestReplyShape> = Context
  .Service<RequestReply, RequestReplyShape>()("@cqbus/rpc/RequestReply")

/**
 * The request-reply port as a service: `makeRpcClient` and `serveRpc` need it.
 *
 * @since 0.1.0
 * @category services
 */
export class RequestReply extends RequestReplyKey {}

/**
 * An in-process backend with the semantics of core NATS: no server means `NoResponders` at once, a request goes to
 * one server per queue group (round robin) and to every server without a queue, and the first reply wins. Time comes
 * from Effect's `Clock`, so timeouts follow a `TestClock`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeMemory: Effect.Effect<RequestReplyShape> = memory.make

/**
 * `RequestReply` in process (see `makeMemory`).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { RequestReply } from "@cqbus/rpc"
 * const program = Effect.gen(function*() {
 *   const port = yield* RequestReply.RequestReply
 *   yield* Effect.log(port.name) // "memory"
 * })
 * Effect.runPromise(program.pipe(Effect.provide(RequestReply.layerMemory())))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerMemory = (): Layer.Layer<RequestReply> => Layer.effect(RequestReply, makeMemory)
