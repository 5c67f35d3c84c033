/**
 * Typed request-reply over core NATS: the `RequestReply` port of `@cqbus/rpc` on a NATS connection, so the clients
 * and servers generated from protobuf services (`protoc-gen-cqbus`) talk over plain NATS subjects — the same subjects,
 * bodies and NATS micro error headers a Go service built on `nats.go/micro` uses. Requests are at-most-once and not
 * stored: a call with no server running fails at once with `NoResponders` (the server's no-responders status).
 *
 * @module
 */
import type { Headers } from "@cqbus/core"
import { noResponders, RequestFailed, RequestReply, requestTimeout, ServeError } from "@cqbus/rpc"
import { errors, type NatsConnection as NatsClient, type RequestOptions } from "@nats-io/nats-core"
import { Duration, Effect, FiberSet, Layer } from "effect"
import { causes, message } from "./internal/errors.ts"
import { headerSourceOf, toMsgHdrs } from "./internal/headers.ts"
import { NatsConnection } from "./NatsConnection.ts"

const isEmpty = (headers: Headers): boolean => {
  for (const _ in headers) return false
  return true
}

const failed = (subject: string, reason: RequestFailed["reason"], text: string, cause: unknown): RequestFailed =>
  new RequestFailed({ subject, reason, message: text, cause })

const requestError = (cause: unknown, subject: string, timeout: Duration.Duration) => {
  for (const error of causes(cause)) {
    if (error instanceof errors.NoRespondersError) return noResponders(subject)
    if (error instanceof errors.RequestError && error.isNoResponders()) return noResponders(subject)
    if (error instanceof errors.TimeoutError) return requestTimeout(subject, timeout)
    if (error instanceof errors.ClosedConnectionError || error instanceof errors.DrainingConnectionError) {
      return failed(subject, "Closed", `cannot request ${subject}: the NATS connection is closed`, cause)
    }
    if (error instanceof errors.PermissionViolationError) {
      return failed(subject, "PermissionDenied", `not allowed to request ${subject}: ${message(error)}`, cause)
    }
  }
  return failed(subject, "Transport", `request to ${subject} failed: ${message(cause)}`, cause)
}

const serveFailed = (subject: string, reason: ServeError["reason"], text: string, cause: unknown): ServeError =>
  new ServeError({ subject, reason, message: text, cause })

const serveError = (cause: unknown, subject: string): ServeError => {
  for (const error of causes(cause)) {
    if (error instanceof errors.ClosedConnectionError || error instanceof errors.DrainingConnectionError) {
      return serveFailed(subject, "Closed", `cannot serve ${subject}: the NATS connection is closed`, cause)
    }
    if (error instanceof errors.InvalidSubjectError) {
      return serveFailed(subject, "InvalidSubject", `cannot serve ${subject}: ${message(error)}`, cause)
    }
    if (error instanceof errors.PermissionViolationError) {
      return serveFailed(subject, "PermissionDenied", `not allowed to serve ${subject}: ${message(error)}`, cause)
    }
  }
  return serveFailed(subject, "Transport", `cannot serve ${subject}: ${message(cause)}`, cause)
}

/**
 * The `RequestReply` port over a NATS connection (which the caller owns: nothing here closes it).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (nc: NatsClient): RequestReply.RequestReplyShape => {
  const request: RequestReply.RequestReplyShape["request"] = (subject, body, options) =>
    Effect.tryPromise({
      try: () => {
        const opts: RequestOptions = { timeout: Math.max(1, Math.ceil(Duration.toMillis(options.timeout))) }
        // A request without headers is a bare protobuf body, byte for byte what a Go client sends.
        if (!isEmpty(options.headers)) opts.headers = toMsgHdrs(options.headers)
        return nc.request(subject, body, opts)
      },
      catch: (cause) => requestError(cause, subject, options.timeout)
    }).pipe(Effect.map((msg) => ({ body: msg.data, headers: headerSourceOf(msg).headers })))

  const serve: RequestReply.RequestReplyShape["serve"] = (subject, options, handle) =>
    Effect.gen(function*() {
      // Acquired first, so its finalizer (interrupting what is still running) runs after the drain below.
      const fibers = yield* FiberSet.make<void>()
      const run = yield* FiberSet.runtime(fibers)<never>()
      yield* Effect.acquireRelease(
        Effect.try({
          try: () =>
            nc.subscribe(subject, {
              ...(options.queue === undefined ? {} : { queue: options.queue }),
              callback: (error, msg) => {
                if (error !== null) {
                  // The server refused the subscription after the fact (a permissions violation): requests will
                  // meet "no responders", so say why where an operator looks.
                  run(Effect.logError(`cqbus: the request-reply server on ${subject} was refused by NATS`, error))
                  return
                }
                // Headers read from the raw block: nats.js's decoder throws on a value with a bare CR or LF, and a
                // peer may send one; that request is served like any other.
                run(Effect.flatMap(
                  handle({ subject: msg.subject, body: msg.data, headers: headerSourceOf(msg).headers }),
                  (reply) =>
                    Effect.sync(() => {
                      // `respond` is a no-op for a message without a reply subject (a plain publish).
                      const headers = isEmpty(reply.headers) ? undefined : { headers: toMsgHdrs(reply.headers) }
                      msg.respond(reply.body, headers)
                    })
                ))
              }
            }),
          catch: (cause) => serveError(cause, subject)
        }),
        (sub) =>
          Effect.andThen(
            // Unsubscribes, then waits until the requests already received have been handed to `run`.
            Effect.ignore(Effect.tryPromise(() => sub.drain())),
            FiberSet.awaitEmpty(fibers).pipe(Effect.timeoutOption(options.drainTimeout))
          )
      )
      // The server has registered the subscription once it answers a PING: a request sent after `serve` returns
      // cannot meet "no responders".
      yield* Effect.tryPromise({ try: () => nc.flush(), catch: (cause) => serveError(cause, subject) })
    })

  return { name: "nats", request, serve }
}

/**
 * `RequestReply` over the `NatsConnection` in context: from `NatsEventBus.layer` (request-reply shares the bus's
 * connection) or, for a request-reply-only client or server, from `NatsConnection.layer`, which needs no JetStream.
 *
 * @example
 * ```ts
 * import { Layer } from "effect"
 * import { NatsConnection, NatsEventBus, NatsRequestReply } from "@cqbus/nats"
 * // beside the bus, on its connection
 * const withBus = NatsRequestReply.layer.pipe(Layer.provideMerge(NatsEventBus.layer({ servers: "nats://127.0.0.1:4222" })))
 * // alone: core NATS only, no stream is touched
 * const alone = NatsRequestReply.layer.pipe(Layer.provideMerge(NatsConnection.layer({ servers: "nats://127.0.0.1:4222" })))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<RequestReply.RequestReply, never, NatsConnection> = Layer.effect(
  RequestReply.RequestReply,
  Effect.map(Effect.service(NatsConnection), (connection) => make(connection.nc))
)

/**
 * `RequestReply` over a connection the application owns (for example one used by several components).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConnection = (nc: NatsClient): Layer.Layer<RequestReply.RequestReply> =>
  Layer.succeed(RequestReply.RequestReply, make(nc))
