/**
 * Running bus programs in tests: a fresh backend per test, virtual time where the backend follows Effect's clock and
 * real time where it cannot (a broker), and waiting for a condition in whichever time the test runs on. Cases written
 * with these helpers run unchanged against every backend.
 *
 * @module
 */
import type { Delivery } from "@cqbus/core"
import { Cause, Effect, Exit, Layer, type Scope } from "effect"
import { TestClock } from "effect/testing"
import { WaitTimeout } from "./Errors.ts"
import assert from "node:assert/strict"

/**
 * How a test's time passes: `"virtual"` drives a `TestClock` (instant, deterministic), `"real"` uses the wall clock.
 *
 * @since 0.1.0
 * @category models
 */
export type TimeMode = "virtual" | "real"

/**
 * Runs a scoped program against a layer, under a `TestClock` in virtual mode. The scope of the program closes (and
 * its subscriptions drain) before the layer is torn down.
 *
 * @since 0.1.0
 * @category running
 */
export const runScoped = <A, E, ROut, E2>(
  layer: Layer.Layer<ROut, E2>,
  program: Effect.Effect<A, E, ROut | Scope.Scope>,
  time: TimeMode = "virtual"
): Promise<A> => {
  const provided = program.pipe(Effect.scoped, Effect.provide(layer))
  return Effect.runPromise(time === "virtual" ? provided.pipe(Effect.provide(TestClock.layer())) : provided)
}

/**
 * Waits until `condition` holds, letting time pass in steps (virtual or real, as the test runs), and fails with a
 * message naming `what` if it does not hold within `within` milliseconds of that time.
 *
 * @since 0.1.0
 * @category running
 */
export const waitUntil = (
  condition: () => boolean,
  what: string,
  { step = 10, time = "virtual", within = 10_000 }: {
    readonly time?: TimeMode
    readonly within?: number
    readonly step?: number
  } = {}
): Effect.Effect<void, WaitTimeout> =>
  Effect.gen(function*() {
    const passTime = time === "virtual" ? TestClock.adjust(step) : Effect.sleep(step)
    for (let waited = 0; waited <= within; waited += step) {
      // Several yields per step: deliveries hop through a few fibers before a handler sees them.
      for (let i = 0; i < 5; i++) {
        if (condition()) return
        yield* Effect.yieldNow
      }
      yield* passTime
    }
    if (!condition()) {
      return yield* Effect.fail(
        new WaitTimeout({ message: `timed out after ${within} ms (${time} time) waiting until ${what}`, within })
      )
    }
  })

/**
 * Lets `millis` of (virtual or real) time pass, for checks that something does NOT happen.
 *
 * @since 0.1.0
 * @category running
 */
export const letTimePass = (millis: number, time: TimeMode = "virtual"): Effect.Effect<void> =>
  Effect.gen(function*() {
    const step = Math.min(10, millis)
    for (let passed = 0; passed < millis; passed += step) {
      for (let i = 0; i < 5; i++) yield* Effect.yieldNow
      yield* time === "virtual" ? TestClock.adjust(step) : Effect.sleep(step)
    }
    for (let i = 0; i < 5; i++) yield* Effect.yieldNow
  })

/**
 * A `Delivery` for calling a handler or a middleware directly in a unit test, without a bus: topic
 * `cqc.events.v1.test`, event id `e-1`, attempt 1 of `maxDeliver` 5, no headers, no group; `overrides` replaces any
 * of them.
 *
 * @since 0.1.0
 * @category running
 */
export const testDelivery = (overrides: Partial<Delivery> = {}): Delivery => {
  const headers = overrides.headers ?? {}
  return {
    topic: "cqc.events.v1.test",
    subject: overrides.topic ?? "cqc.events.v1.test",
    eventId: "e-1",
    attempt: 1,
    maxDeliver: 5,
    headers,
    header: (name) => headers[name],
    publishedAt: undefined,
    sequence: 1,
    key: undefined,
    group: undefined,
    ...overrides
  }
}

/**
 * The typed failure of an exit that must have failed; an assertion fails when it succeeded or died.
 *
 * @since 0.1.0
 * @category running
 */
export const failureOf = <A, E>(exit: Exit.Exit<A, E>): E => {
  assert.ok(Exit.isFailure(exit), "the call fails")
  const found = Cause.findErrorOption(exit.cause)
  assert.ok(found._tag === "Some", `a typed failure, got ${Cause.pretty(exit.cause)}`)
  return found.value
}
