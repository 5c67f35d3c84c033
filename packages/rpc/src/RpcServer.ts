/**
 * The typed server: serves every unary method of a `ServiceDef` through the `RequestReply` in context, decoding each
 * request, running its handler and encoding the response or the error answer (`RpcErrorHeaders`).
 *
 * @module
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf"
import type { DescMessage, DescService, MessageInitShape, MessageShape } from "@bufbuild/protobuf"
import { type Headers } from "@cqbus/core"
import { Options } from "@cqbus/core/backend"
import { Cause, Duration, Effect, type Scope } from "effect"
import { RpcError, ServeError } from "./Errors.ts"
import { message, methods } from "./internal/binding.ts"
import { type IncomingRequest, type Reply, RequestReply } from "./RequestReply.ts"
import { RpcErrorHeaders } from "./RpcErrorHeaders.ts"
import type { InputOf, OutputOf, ServiceDef, UnaryMethodName } from "./ServiceDef.ts"

/**
 * What a handler knows about the request besides its body.
 *
 * @since 0.1.0
 * @category models
 */
export interface RequestInfo {
  readonly subject: string
  /** The method's protobuf full name (`"cqc.control.v1.ControlService.PauseConsumer"`). */
  readonly method: string
  readonly headers: Headers
}

/**
 * The handlers of a service: one per unary method, answering the response or failing with an `RpcError`, which
 * travels back to the caller.
 *
 * @since 0.1.0
 * @category models
 */
export type RpcHandlers<S extends DescService, R = never> = {
  readonly [K in UnaryMethodName<S>]: (
    request: MessageShape<InputOf<S, K>>,
    info: RequestInfo
  ) => Effect.Effect<MessageInitShape<OutputOf<S, K>>, RpcError, R>
}

/**
 * Options of `serveRpc`.
 *
 * @since 0.1.0
 * @category models
 */
export interface RpcServeOptions {
  /**
   * The queue group: servers in one group split the requests. Default: the service's full name, so the instances of a
   * service share its load.
   */
  readonly queue?: string
  /** How long closing the server waits for running handlers (default 10 seconds). */
  readonly drainTimeout?: Duration.Input
}

/** A queue group name: one token of printable characters (dots allowed, as in the default, the service's name). */
const checkQueue = (value: unknown): Options.Check =>
  Options.first(
    () => Options.text("queue", value, { maxLength: Options.MAX_NAME_LENGTH }),
    () =>
      typeof value === "string" && /[\s*>]/.test(value)
        ? { option: "queue", message: `queue must be a name without whitespace or wildcards, got ${Options.show(value)}` }
        : undefined
  )

const errorReply = (code: string, text: string): Reply => ({
  body: new Uint8Array(0),
  // Header values cannot carry line breaks.
  headers: { [RpcErrorHeaders.code]: code, [RpcErrorHeaders.message]: text.replace(/[\r\n]+/g, " ") }
})

const NO_HEADERS: Headers = Object.freeze({})

/**
 * Serves every unary method of a service over the `RequestReply` in context until the scope closes. A request body
 * that is not the method's input type is answered with code `"400"`; a handler defect is logged and answered with
 * `"500"` (without its details, which stay in the server's log).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { defineService, RpcError, serveRpc } from "@cqbus/rpc"
 * import { ControlService } from "@cqbus/testkit/control"
 *
 * const server = serveRpc(defineService(ControlService), {
 *   getStatus: () => Effect.succeed({ instance: "worker-1", consumers: [] }),
 *   pauseConsumer: (request) => Effect.fail(new RpcError({ code: "404", message: `no consumer ${request.name}` }))
 * })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const serveRpc = <S extends DescService, R = never>(
  def: ServiceDef<S>,
  handlers: RpcHandlers<S, R>,
  options: RpcServeOptions = {}
): Effect.Effect<void, ServeError, Scope.Scope | R | RequestReply> =>
  Effect.gen(function*() {
    const port = yield* RequestReply
    const context = yield* Effect.context<R>()
    const invalid = Options.first(
      () => Options.object("options", options),
      () => checkQueue(options.queue),
      () => Options.duration("drainTimeout", options.drainTimeout, Options.Ranges.drain)
    )
    if (invalid !== undefined) {
      return yield* new ServeError({
        subject: def.typeName,
        reason: "InvalidOptions",
        message: `cannot serve ${def.typeName}: ${invalid.message}`
      })
    }
    const queue = options.queue ?? def.typeName
    const drainTimeout = Duration.fromInputUnsafe(options.drainTimeout ?? Duration.seconds(10))
    for (const [method, subject] of methods(def)) {
      const handler = (handlers as unknown as Record<
        string,
        (request: unknown, info: RequestInfo) => Effect.Effect<MessageInitShape<DescMessage>, RpcError, R>
      >)[method.localName]!
      const handle = (request: IncomingRequest): Effect.Effect<Reply> => {
        let input: unknown
        try {
          input = fromBinary(method.input, request.body)
        } catch (cause) {
          const text = `the request is not a valid ${method.input.typeName}: ${message(cause)}`
          return Effect.succeed(errorReply("400", text))
        }
        const info: RequestInfo = {
          subject: request.subject,
          method: `${def.typeName}.${method.name}`,
          headers: request.headers
        }
        return Effect.suspend(() => handler(input, info)).pipe(
          Effect.map((output): Reply => ({
            body: toBinary(method.output, create(method.output, output)),
            headers: NO_HEADERS
          })),
          Effect.catchCause((cause) => {
            if (Cause.hasInterruptsOnly(cause)) return Effect.interrupt
            const failure = Cause.findErrorOption(cause)
            // The type says RpcError; a handler that fails with anything else at run time is answered like a defect.
            if (failure._tag === "Some" && failure.value instanceof RpcError) {
              return Effect.succeed(errorReply(failure.value.code, failure.value.message))
            }
            return Effect.as(
              Effect.logError(`${info.method}: the handler failed unexpectedly`, cause),
              errorReply("500", `internal error in ${info.method}`)
            )
          }),
          Effect.provideContext(context)
        )
      }
      yield* port.serve(subject, { queue, drainTimeout }, handle)
    }
  })
