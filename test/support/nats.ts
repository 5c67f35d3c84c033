// Helpers for the NATS fault-injection tests (test/nats.*.test.ts): run a test body in a scope that owns its own
// nats-server, build a bus in that scope, wait in real time. Not a test file itself (no `.test.ts`).
import { EventBus, type EventBusShape, Transport, type TransportShape } from "@cqbus/core"
import { type NatsEventBusConfig, NatsEventBus, NatsTransport, type NatsTransportShape } from "@cqbus/nats"
import {
  type NatsServer as TestServer,
  NatsServer,
  type NatsServerError,
  type NatsServerOptions
} from "@cqbus/testkit/nats-server"
import { JetStreamApiCodes, JetStreamApiError, type JetStreamManager } from "@nats-io/jetstream"
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
    bus: Context.get(context, EventBus),
    transport: Context.get(context, Transport),
    nats: Context.get(context, NatsTransport)
  }))

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
 * Deletes a consumer as an operator would, retrying where the server itself is racy: nats-server 2.9 can answer a
 * delete with "unlinkat …: directory not empty" when it is still writing the consumer's store (a pending ack or nak),
 * with the consumer gone or not. Resolves true once the consumer no longer exists.
 */
export const deleteConsumer = async (jsm: JetStreamManager, stream: string, consumer: string): Promise<boolean> => {
  for (let attempt = 1;; attempt++) {
    try {
      return await jsm.consumers.delete(stream, consumer)
    } catch (error) {
      const gone = await jsm.consumers.info(stream, consumer).then(
        () => false,
        (e: unknown) => e instanceof JetStreamApiError && e.code === JetStreamApiCodes.ConsumerNotFound
      )
      if (gone) return true
      if (attempt >= 5) throw error
      await new Promise((resolve) => setTimeout(resolve, 100 * attempt))
    }
  }
}

/** Options for servers started by these tests. */
export type { NatsServerOptions }
