/**
 * The in-process request-reply backend: the `RequestReply` port with the semantics of core NATS, so typed clients and
 * servers run in tests and single-process services without a NATS server (`NatsRequestReply` in `@cqbus/nats` is the
 * backend over NATS). Servers are registered per subject in a map.
 *
 * @module
 */
import { Deferred, Effect, FiberSet, Layer } from "effect"
import { type NoResponders, noResponders, type RequestTimeout, requestTimeout } from "./Errors.ts"
import { type IncomingRequest, type Reply, RequestReply, type RequestReplyShape } from "./RequestReply.ts"

interface MemoryServer {
  readonly queue: string | undefined
  readonly handle: (request: IncomingRequest) => Effect.Effect<Reply>
  readonly run: (effect: Effect.Effect<void>) => unknown
}

/**
 * An in-process backend with the semantics of core NATS: no server means `NoResponders` at once, a request goes to
 * one server per queue group (round robin) and to every server without a queue, and the first reply wins. Time comes
 * from Effect's `Clock`, so timeouts follow a `TestClock`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: Effect.Effect<RequestReplyShape> = Effect.sync(() => {
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
 * `RequestReply` in process (see `make`).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { MemoryRequestReply, RequestReply } from "@cqbus/rpc"
 * const program = Effect.gen(function*() {
 *   const port = yield* RequestReply.RequestReply
 *   yield* Effect.log(port.name) // "memory"
 * })
 * Effect.runPromise(program.pipe(Effect.provide(MemoryRequestReply.layer())))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (): Layer.Layer<RequestReply> => Layer.effect(RequestReply, make)
