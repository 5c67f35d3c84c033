/**
 * Every typed error of `@cqbus/rpc`, so a caller finds the whole failure vocabulary of request-reply in one place
 * and `Effect.catchTag` covers it. Backends convert their own errors into these once, at their boundary, and build
 * `NoResponders` and `RequestTimeout` with `noResponders` / `requestTimeout` so every backend words them alike.
 *
 * The classes extend core's `TaggedErrorBase` (an error prints as `Tag: message`) with an explicit `_tag` field,
 * because JSR rejects class-expression superclasses in a published API (DESIGN §6).
 *
 * @module
 */
import { TaggedErrorBase } from "@cqbus/core/backend"
import { Duration } from "effect"

/**
 * Nothing serves the request's subject. The broker says so at once, so a call to a service that is not running fails
 * fast instead of waiting for its timeout.
 *
 * @since 0.1.0
 * @category errors
 */
export class NoResponders extends TaggedErrorBase<{ readonly subject: string; readonly message: string }> {
  readonly _tag = "NoResponders"
}

/**
 * No reply arrived within the timeout. The server may still have handled the request, so only retry requests that
 * are safe to repeat.
 *
 * @since 0.1.0
 * @category errors
 */
export class RequestTimeout extends TaggedErrorBase<{
  readonly subject: string
  readonly timeout: Duration.Input
  readonly message: string
}> {
  readonly _tag = "RequestTimeout"
}

/**
 * An error answer. A server's handler fails with it to answer with an error instead of a response; the client fails
 * with the same error when the answer is one. `code` is a short string, by convention an HTTP-like status as NATS
 * micro services use (`"400"` bad request, `"404"` not found, `"500"` internal); it travels in the
 * `Nats-Service-Error-Code` header and `message` in `Nats-Service-Error`.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { RpcError } from "@cqbus/rpc"
 * const pause = (request: { readonly name: string }) =>
 *   request.name === "" ? Effect.fail(new RpcError({ code: "400", message: "name is required" })) : Effect.succeed({})
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class RpcError extends TaggedErrorBase<{ readonly code: string; readonly message: string }> {
  readonly _tag = "RpcError"
}

/**
 * Why a request failed before or after the server's answer.
 *
 * @since 0.1.0
 * @category errors
 */
export type RequestFailedReason = "Encode" | "Decode" | "Closed" | "PermissionDenied" | "InvalidOptions" | "Transport"

/**
 * The request could not be sent, or its reply could not be read (`Decode`: the body is not the method's response
 * type).
 *
 * @since 0.1.0
 * @category errors
 */
export class RequestFailed extends TaggedErrorBase<{
  readonly subject: string
  readonly reason: RequestFailedReason
  readonly message: string
  readonly cause?: unknown
}> {
  readonly _tag = "RequestFailed"
}

/**
 * A server could not start serving a subject; nothing was subscribed.
 *
 * @since 0.1.0
 * @category errors
 */
export class ServeError extends TaggedErrorBase<{
  readonly subject: string
  readonly reason: "Closed" | "InvalidSubject" | "InvalidOptions" | "PermissionDenied" | "Transport"
  readonly message: string
  readonly cause?: unknown
}> {
  readonly _tag = "ServeError"
}

/**
 * The `NoResponders` error for a subject.
 *
 * @since 0.1.0
 * @category constructors
 */
export const noResponders = (subject: string): NoResponders =>
  new NoResponders({ subject, message: `no responders for ${subject}: no server of this method is running` })

/**
 * The `RequestTimeout` error for a subject and timeout.
 *
 * @since 0.1.0
 * @category constructors
 */
export const requestTimeout = (subject: string, timeout: Duration.Duration): RequestTimeout =>
  new RequestTimeout({ subject, timeout, message: `request to ${subject} timed out after ${Duration.format(timeout)}` })
