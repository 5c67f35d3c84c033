/**
 * The byte-level request-reply port: what a backend implements so the typed client (`makeRpcClient`) and server
 * (`serveRpc`) run on it. `@cqbus/nats` provides it over core NATS (`NatsRequestReply.layer`);
 * `MemoryRequestReply.layer()` runs it in process.
 *
 * @module
 */
import type { Headers } from "@cqbus/core"
import { Context, type Duration, type Effect, type Scope } from "effect"
import type { NoResponders, RequestFailed, RequestTimeout, ServeError } from "./Errors.ts"

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
