// Helpers for the NATS fault-injection tests (packages/nats/test/*.test.ts): run a test body in a scope that owns its own
// nats-server, build a bus in that scope, wait in real time. Not a test file itself (no `.test.ts`).
import { EventBus, type EventBusShape, Transport } from "@cqbus/core"
import { type TransportShape } from "@cqbus/core/backend"
import { type NatsEventBusConfig, NatsEventBus, NatsTransport, type NatsTransportShape } from "@cqbus/nats"
import {
  NatsServer,
  type NatsServerError,
  type NatsServerOptions,
  type NatsServerShape as TestServer
} from "@cqbus/testkit/nats-server"
import { JetStreamApiCodes, JetStreamApiError, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream"
import type { NatsConnection } from "@nats-io/nats-core"
import { connect } from "@nats-io/transport-node"
import { Context, Effect, Exit, Layer, Scope } from "effect"

export type { TestServer }

/** Runs a scoped test body; every resource (server, bus, subscriptions) is released when it ends, pass or fail. */
export const run = <A, E>(body: Effect.Effect<A, E, Scope.Scope>): Promise<A> => Effect.runPromise(Effect.scoped(body))

/** A fresh server for this test: stopped and its store removed when the test's scope closes. */
export const server: (options?: NatsServerOptions) => Effect.Effect<TestServer, NatsServerError, Scope.Scope> =
  NatsServer.make

/** What a built bus gives a test. */
export interface Bus {
  readonly bus: EventBusShape
  readonly transport: TransportShape
  readonly nats: NatsTransportShape
}

/** Builds `NatsEventBus.layer(config)` into the current scope (released, drained, before the server stops). */
export const bus = (config: NatsEventBusConfig): Effect.Effect<Bus, Error, Scope.Scope> =>
  Effect.map(Layer.build(NatsEventBus.layer(config)), (context) => ({
    bus: Context.get(context, EventBus.EventBus),
    transport: Context.get(context, Transport.Transport),
    nats: Context.get(context, NatsTransport.NatsTransport)
  }))

/** A plain nats.js connection and its JetStream manager ("someone else", an operator), closed with the test's scope. */
export const admin = (
  url: string,
  options: { readonly user?: string; readonly pass?: string } = {}
): Effect.Effect<{ readonly nc: NatsConnection; readonly jsm: JetStreamManager }, never, Scope.Scope> =>
  Effect.gen(function*() {
    const nc = yield* Effect.acquireRelease(
      Effect.promise(() => connect({ servers: url, ...options })),
      (nc: NatsConnection) => Effect.promise(() => nc.close())
    )
    const jsm = yield* Effect.promise(() => jetstreamManager(nc))
    return { nc, jsm }
  })

/** Runs `body` in a scope of its own, which the test closes when it wants (a subscriber "process" going away). */
export const inScope = <A, E, R>(
  body: Effect.Effect<A, E, R | Scope.Scope>
): Effect.Effect<{ readonly scope: Scope.Closeable; readonly value: A; readonly close: Effect.Effect<void> }, E, R> =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const value = yield* body.pipe(Scope.provide(scope))
    return { scope, value, close: Scope.close(scope, Exit.void) }
  })

/** Waits (real time) until `condition` holds; fails naming `what` (and `detail()`, if given) after `within` ms. */
export const waitFor = (
  condition: () => boolean,
  what: string,
  within = 15_000,
  detail?: () => string
): Effect.Effect<void, Error> =>
  Effect.gen(function*() {
    const deadline = Date.now() + within
    while (!condition()) {
      if (Date.now() > deadline) {
        return yield* Effect.fail(new Error(`timed out after ${within} ms waiting until ${what}${detail ? `: ${detail()}` : ""}`))
      }
      yield* Effect.sleep("20 millis")
    }
  })

/**
 * Deletes a consumer as an operator would, retrying where the server itself is racy: nats-server 2.9 answers a delete
 * with "unlinkat …: directory not empty" when files appear in the consumer's store while it removes it, typically
 * because a live subscription recreates the consumer on the 409 the delete itself sent. The consumer was deleted then;
 * it is gone, or it is a new one (another creation time). Resolves true once either is seen.
 */
export const deleteConsumer = async (jsm: JetStreamManager, stream: string, consumer: string): Promise<boolean> => {
  const createdOf = (): Promise<string | undefined> =>
    jsm.consumers.info(stream, consumer).then(
      (info) => info.created,
      (e: unknown) => {
        if (e instanceof JetStreamApiError && e.code === JetStreamApiCodes.ConsumerNotFound) return undefined
        throw e
      }
    )
  const before = await createdOf()
  for (let attempt = 1;; attempt++) {
    try {
      return await jsm.consumers.delete(stream, consumer)
    } catch (error) {
      const now = await createdOf().catch(() => before)
      if (now === undefined || now !== before) {
        console.log(`deleteConsumer: ${consumer} was deleted (${now === undefined ? "gone" : "recreated"}) though the server answered: ${String(error)}`)
        return true
      }
      if (attempt >= 5) throw error
      await new Promise((resolve) => setTimeout(resolve, 100 * attempt))
    }
  }
}

/** Options for servers started by these tests. */
export type { NatsServerOptions }

/** Builds the bus layer in a scope of its own and returns how that ended (the layer is released right away). */
export const buildExit = (config: NatsEventBusConfig): Effect.Effect<Exit.Exit<unknown, unknown>> =>
  Effect.exit(Effect.scoped(Layer.build(NatsEventBus.layer(config))))
