/**
 * The typed client: one function per unary method of a `ServiceDef`, encoding the request, sending it through the
 * `RequestReply` in context and decoding the response or the error answer (`RpcErrorHeaders`).
 *
 * @module
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf"
import type { DescMessage, DescMethod, DescService, MessageInitShape, MessageShape } from "@bufbuild/protobuf"
import { type Headers } from "@cqbus/core"
import { Options } from "@cqbus/core/backend"
import { Duration, Effect } from "effect"
import { type NoResponders, RequestFailed, type RequestTimeout, RpcError } from "./Errors.ts"
import { message, methods } from "./internal/binding.ts"
import { type Reply, RequestReply } from "./RequestReply.ts"
import { RpcErrorHeaders } from "./RpcErrorHeaders.ts"
import type { InputOf, OutputOf, ServiceDef, UnaryMethodName } from "./ServiceDef.ts"

/**
 * What a call can fail with: no server, no reply in time, an error answer, or a request that could not be sent or a
 * reply that could not be read.
 *
 * @since 0.1.0
 * @category models
 */
export type RequestError = NoResponders | RequestTimeout | RpcError | RequestFailed

/**
 * Options of one call.
 *
 * @since 0.1.0
 * @category models
 */
export interface CallOptions {
  /** How long to wait for the reply (default: the client's, 5 seconds unless set). */
  readonly timeout?: Duration.Input
  /** Extra request headers (`traceparent`, your own). */
  readonly headers?: Headers
}

/**
 * Options of a client.
 *
 * @since 0.1.0
 * @category models
 */
export interface RpcClientOptions {
  /** The default timeout of its calls (default 5 seconds). */
  readonly timeout?: Duration.Input
  /** Headers sent with every call. */
  readonly headers?: Headers
}

/**
 * A typed client: one function per unary method, taking the request and answering the decoded response.
 *
 * @since 0.1.0
 * @category models
 */
export type RpcClient<S extends DescService> = {
  readonly [K in UnaryMethodName<S>]: (
    request: MessageInitShape<InputOf<S, K>>,
    options?: CallOptions
  ) => Effect.Effect<MessageShape<OutputOf<S, K>>, RequestError>
}

/** The options of a client or a call: a timeout within `Options.Ranges.timeout` and a headers object. */
const checkCallOptions = (options: unknown, prefix: string): Options.Check =>
  Options.fields(prefix === "" ? "options" : prefix.slice(0, -1), options, (o) =>
    Options.first(
      () => Options.duration(`${prefix}timeout`, o.timeout, Options.Ranges.timeout),
      () => Options.object(`${prefix}headers`, o.headers)
    ))

/**
 * A typed client of a service over the `RequestReply` in context.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { defineService, makeRpcClient } from "@cqbus/rpc"
 * import { ControlService } from "@cqbus/testkit/control"
 *
 * const program = Effect.gen(function*() {
 *   const control = yield* makeRpcClient(defineService(ControlService), { timeout: "2 seconds" })
 *   const status = yield* control.getStatus({ prefix: "billing" })
 *   yield* Effect.log(`${status.instance}: ${status.consumers.length} consumers`)
 * })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeRpcClient = <S extends DescService>(
  def: ServiceDef<S>,
  options: RpcClientOptions = {}
): Effect.Effect<RpcClient<S>, never, RequestReply> =>
  Effect.map(Effect.service(RequestReply), (port) => {
    // A bad client option fails every call with `InvalidOptions` rather than the construction, whose type (used by
    // generated clients) has no error channel.
    const invalidClient = checkCallOptions(options, "client.")
    const timeout = invalidClient === undefined ? Duration.fromInputUnsafe(options.timeout ?? Duration.seconds(5)) : Duration.zero
    const base = options.headers ?? {}
    const out: Record<string, (request: never, call?: CallOptions) => Effect.Effect<unknown, RequestError>> = {}
    for (const [method, subject] of methods(def)) {
      out[method.localName] = (request: MessageInitShape<DescMessage>, call?: CallOptions) =>
        Effect.suspend(() => {
          const invalid = invalidClient ?? (call === undefined ? undefined : checkCallOptions(call, ""))
          if (invalid !== undefined) {
            return Effect.fail(
              new RequestFailed({ subject, reason: "InvalidOptions", message: `cannot request ${subject}: ${invalid.message}` })
            )
          }
          let body: Uint8Array
          try {
            body = toBinary(method.input, create(method.input, request))
          } catch (cause) {
            return Effect.fail(
              new RequestFailed({
                subject,
                reason: "Encode",
                message: `cannot encode ${method.input.typeName}: ${message(cause)}`,
                cause
              })
            )
          }
          const headers = call?.headers === undefined ? base : { ...base, ...call.headers }
          const wait = call?.timeout === undefined ? timeout : Duration.fromInputUnsafe(call.timeout)
          return Effect.flatMap(
            port.request(subject, body, { headers, timeout: wait }),
            (reply) => decodeReply(method, subject, reply)
          )
        })
    }
    return out as unknown as RpcClient<S>
  })

const decodeReply = (
  method: DescMethod,
  subject: string,
  reply: Reply
): Effect.Effect<unknown, RpcError | RequestFailed> => {
  const code = reply.headers[RpcErrorHeaders.code]
  if (code !== undefined) {
    return Effect.fail(new RpcError({ code, message: reply.headers[RpcErrorHeaders.message] ?? "" }))
  }
  try {
    return Effect.succeed(fromBinary(method.output, reply.body))
  } catch (cause) {
    return Effect.fail(
      new RequestFailed({
        subject,
        reason: "Decode",
        message: `the reply on ${subject} is not a valid ${method.output.typeName}: ${message(cause)}`,
        cause
      })
    )
  }
}
