/**
 * Typed request-reply for protobuf services: a `ServiceDef` binds a protobuf `service` to one subject per unary
 * method, `makeRpcClient` calls the methods and `serveRpc` answers them, over a small byte-level `RequestReply` port
 * that a backend implements (`@cqbus/nats` over core NATS; `RequestReply.layerMemory()` in process). Generated code
 * (`protoc-gen-cqbus`) only binds names and types to these functions, so the wire behaviour lives here, once.
 *
 * Wire contract (the NATS micro conventions, so Go services built on `nats.go/micro` interoperate): the request body
 * is the protobuf binary of the method's input; a successful reply is the protobuf binary of its output; an error
 * reply has an empty body and the headers `Nats-Service-Error-Code` (the `RpcError` code) and `Nats-Service-Error`
 * (its message). Method `M` of service `S` in package `p` listens on `p.snake(S).snake(M)`
 * (`cqc.control.v1.control_service.pause_consumer`).
 *
 * @module
 */
import {
  create,
  type DescMessage,
  type DescMethod,
  type DescService,
  fromBinary,
  type MessageInitShape,
  type MessageShape,
  toBinary
} from "@bufbuild/protobuf"
import { Cause, Context, Deferred, Duration, Effect, FiberSet, Layer, type Scope } from "effect"
import { NoResponders, RequestFailed, RequestTimeout, RpcError, ServeError } from "./Errors.ts"
import * as Options from "./Options.ts"
import { checkTopic, snakeCase } from "./Topic.ts"
import type { Headers } from "./Transport.ts"

/**
 * The header names of an error reply (the NATS micro names, so `nats.go/micro` clients and servers read them).
 *
 * @since 0.1.0
 * @category models
 */
export const RpcErrorHeaders: { readonly code: "Nats-Service-Error-Code"; readonly message: "Nats-Service-Error" } = {
  code: "Nats-Service-Error-Code",
  message: "Nats-Service-Error"
}

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
 * The byte-level port a backend implements. `request` sends one request and waits for the first reply; it fails with
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

// An explicitly typed base instead of `class extends Context.Service<...>()(...)`: JSR and `isolatedDeclarations`
// reject a call expression as a superclass (DESIGN §6).
const RequestReplyKey: Context.ServiceClass<RequestReply, "@cqbus/core/RequestReply", RequestReplyShape> = Context
  .Service<RequestReply, RequestReplyShape>()("@cqbus/core/RequestReply")

/**
 * The request-reply port as a service: `makeRpcClient` and `serveRpc` need it; `@cqbus/nats` provides it over core
 * NATS and `RequestReply.layerMemory()` in process.
 *
 * @since 0.1.0
 * @category services
 */
export class RequestReply extends RequestReplyKey {
  /**
   * An in-process request-reply backend with the semantics of core NATS: no server means `NoResponders` at once, a
   * request goes to one server per queue group (round robin) and to every server without a queue, and the first
   * reply wins. Time comes from Effect's `Clock`, so timeouts follow a `TestClock`.
   *
   * @since 0.1.0
   * @category layers
   */
  static layerMemory(): Layer.Layer<RequestReply> {
    return Layer.effect(RequestReply, makeMemory)
  }
}

interface MemoryServer {
  readonly queue: string | undefined
  readonly handle: (request: IncomingRequest) => Effect.Effect<Reply>
  readonly run: (effect: Effect.Effect<void>) => unknown
}

/**
 * Builds an in-process `RequestReplyShape` (see `RequestReply.layerMemory`).
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeMemory: Effect.Effect<RequestReplyShape> = Effect.sync(() => {
  const servers = new Map<string, Array<MemoryServer>>()
  /** The round-robin position of each queue group of each subject. */
  const turns = new Map<string, number>()

  const request: RequestReplyShape["request"] = (subject, body, options) =>
    Effect.suspend((): Effect.Effect<Reply, NoResponders | RequestTimeout> => {
      const all = servers.get(subject) ?? []
      if (all.length === 0) return Effect.fail(noResponders(subject))
      const queues = new Map<string, Array<MemoryServer>>()
      const targets: Array<MemoryServer> = []
      for (const server of all) {
        if (server.queue === undefined) targets.push(server)
        else queues.set(server.queue, [...(queues.get(server.queue) ?? []), server])
      }
      for (const [queue, members] of queues) {
        const key = `${subject} ${queue}`
        const turn = turns.get(key) ?? 0
        turns.set(key, turn + 1)
        targets.push(members[turn % members.length]!)
      }
      const reply = Deferred.makeUnsafe<Reply>()
      const incoming: IncomingRequest = { subject, body, headers: options.headers }
      // Each server handles the request in its own scope, as a NATS server would: a requester that times out or is
      // interrupted does not cancel work a server has started.
      for (const server of targets) {
        server.run(Effect.flatMap(server.handle(incoming), (r) => Deferred.succeed(reply, r)))
      }
      return Deferred.await(reply).pipe(Effect.timeoutOrElse({
        duration: options.timeout,
        orElse: () => Effect.fail(requestTimeout(subject, options.timeout))
      }))
    })

  const serve: RequestReplyShape["serve"] = (subject, options, handle) =>
    Effect.gen(function*() {
      const fibers = yield* FiberSet.make<void>()
      const run = yield* FiberSet.runtime(fibers)<never>()
      const server: MemoryServer = { queue: options.queue, handle, run }
      yield* Effect.acquireRelease(
        Effect.sync(() => servers.set(subject, [...(servers.get(subject) ?? []), server])),
        () =>
          Effect.andThen(
            Effect.sync(() => {
              const rest = (servers.get(subject) ?? []).filter((s) => s !== server)
              if (rest.length === 0) servers.delete(subject)
              else servers.set(subject, rest)
            }),
            // The FiberSet's own finalizer (it was acquired first, so it runs after this one) interrupts what is left.
            FiberSet.awaitEmpty(fibers).pipe(Effect.timeoutOption(options.drainTimeout))
          )
      )
    })

  return { name: "memory", request, serve }
})

/**
 * The `NoResponders` error for a subject (backends use it so every backend says the same thing).
 *
 * @since 0.1.0
 * @category errors
 */
export const noResponders = (subject: string): NoResponders =>
  new NoResponders({ subject, message: `no responders for ${subject}: no server of this method is running` })

/**
 * The `RequestTimeout` error for a subject and timeout.
 *
 * @since 0.1.0
 * @category errors
 */
export const requestTimeout = (subject: string, timeout: Duration.Duration): RequestTimeout =>
  new RequestTimeout({ subject, timeout, message: `request to ${subject} timed out after ${Duration.format(timeout)}` })

/**
 * The subject of a method: the service's package, then the snake_case service and method names
 * (`cqc.control.v1.ControlService.PauseConsumer` → `cqc.control.v1.control_service.pause_consumer`). It reuses the
 * `snakeCase` of event topics, so a Go service derives the same subject with the same rule.
 *
 * @since 0.1.0
 * @category topics
 */
export const methodSubject = (method: DescMethod): string => {
  const pkg = method.parent.file.proto.package
  const local = `${snakeCase(method.parent.name)}.${snakeCase(method.name)}`
  return pkg === "" ? local : `${pkg}.${local}`
}

/**
 * The local names of the unary methods of a service (`"pauseConsumer"`); streaming methods are not request-reply.
 *
 * @since 0.1.0
 * @category models
 */
export type UnaryMethodName<S extends DescService> = {
  [K in keyof S["method"]]: S["method"][K] extends { readonly methodKind: "unary" } ? K : never
}[keyof S["method"]] & string

/**
 * The request schema of method `K` of service `S`.
 *
 * @since 0.1.0
 * @category models
 */
export type InputOf<S extends DescService, K extends keyof S["method"]> = S["method"][K] extends
  { readonly input: infer I extends DescMessage } ? I : never

/**
 * The response schema of method `K` of service `S`.
 *
 * @since 0.1.0
 * @category models
 */
export type OutputOf<S extends DescService, K extends keyof S["method"]> = S["method"][K] extends
  { readonly output: infer O extends DescMessage } ? O : never

/**
 * A protobuf service bound to its subjects.
 *
 * @since 0.1.0
 * @category models
 */
export interface ServiceDef<S extends DescService = DescService> {
  /** The service descriptor generated by protoc-gen-es (`ControlService`). */
  readonly service: S
  /** The protobuf full name (`"cqc.control.v1.ControlService"`), the default queue group of its servers. */
  readonly typeName: string
  /** The subject of each unary method, by local name. */
  readonly subjects: { readonly [K in UnaryMethodName<S>]: string }
}

/**
 * Binds a protobuf service to the subjects of its unary methods (see `methodSubject`). An invalid subject is a
 * programming error and throws `InvalidTopic` here, at definition time.
 *
 * @since 0.1.0
 * @category constructors
 */
export const defineService = <S extends DescService>(service: S): ServiceDef<S> => {
  const subjects: Record<string, string> = {}
  for (const method of service.methods) {
    if (method.methodKind !== "unary") continue
    const subject = methodSubject(method)
    const invalid = checkTopic(subject, "subject")
    if (invalid !== undefined) throw invalid
    subjects[method.localName] = subject
  }
  return { service, typeName: service.typeName, subjects: subjects as ServiceDef<S>["subjects"] }
}

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

const message = (cause: unknown): string => cause instanceof Error ? cause.message : String(cause)

/** The options of a client or a call: a timeout within `Options.Ranges.timeout` and a headers object. */
const checkCallOptions = (options: unknown, prefix: string): Options.Check =>
  Options.first(
    () => Options.object(prefix === "" ? "options" : prefix.slice(0, -1), options),
    () => Options.duration(`${prefix}timeout`, (options as CallOptions | undefined)?.timeout, Options.Ranges.timeout),
    () => Options.object(`${prefix}headers`, (options as CallOptions | undefined)?.headers)
  )

/** A queue group name: one token of printable characters (dots allowed, as in the default, the service's name). */
const checkQueue = (value: unknown): Options.Check =>
  Options.first(
    () => Options.text("queue", value, { maxLength: Options.MAX_NAME_LENGTH }),
    () =>
      typeof value === "string" && /[\s*>]/.test(value)
        ? { option: "queue", message: `queue must be a name without whitespace or wildcards, got ${Options.show(value)}` }
        : undefined
  )

const methods = (def: ServiceDef): ReadonlyArray<readonly [DescMethod, string]> =>
  def.service.methods.flatMap((m) => {
    const subject = (def.subjects as Record<string, string>)[m.localName]
    return subject === undefined ? [] : [[m, subject] as const]
  })

/**
 * A typed client of a service over the `RequestReply` in context.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { defineService, makeRpcClient } from "@cqbus/core"
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
 * import { defineService, RpcError, serveRpc } from "@cqbus/core"
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
