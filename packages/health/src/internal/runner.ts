/**
 * How the routers run their Effects: the `runtime` option (a `ManagedRuntime`, or a `Context` with the services)
 * normalised to one `runPromise`, shared by `healthRouter` and `deadLetterRouter`.
 */
import { Context, Effect } from "effect"
import type { HealthRuntime } from "../HealthRouter.ts"

/** Normalises the runtime option to one `runPromise`. */
export const runnerOf = <R>(
  runtime: HealthRuntime<R>
): <A, E>(effect: Effect.Effect<A, E, R>, options?: Effect.RunOptions) => Promise<A> =>
  Context.isContext(runtime)
    ? Effect.runPromiseWith(runtime as Context.Context<R>)
    : (effect, options) => runtime.runPromise(effect, options)
