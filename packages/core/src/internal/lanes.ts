/**
 * Keyed lanes: effects with the same key run one after another in the order they arrived; effects with different
 * keys run concurrently, at most `concurrency` at once. Memory stays bounded because the transport bounds how many
 * deliveries are in flight, and a waiting delivery holds only a link in its key's chain.
 */
import { Deferred, Effect, Exit, Semaphore } from "effect"

/** Runs an effect under the shared concurrency limit. */
export type WithPermit = <X>(effect: Effect.Effect<X>) => Effect.Effect<X>

export interface KeyedLanes {
  /**
   * Runs `body` once every earlier body of the same key has finished. `body` holds the key for its whole run but must
   * wrap the parts that count against `concurrency` (the handler runs) in `withPermit`, so a body that waits (a
   * backoff sleep) does not keep other keys from running.
   */
  readonly run: <A>(key: string, body: (withPermit: WithPermit) => Effect.Effect<A>) => Effect.Effect<A>
  /** Keys with a running or waiting effect (for tests and introspection). */
  readonly size: () => number
}

export const makeKeyedLanes = (concurrency: number): KeyedLanes => {
  const permits = Semaphore.makeUnsafe(concurrency)
  const tails = new Map<string, Deferred.Deferred<void>>()
  const withPermit: WithPermit = (effect) => permits.withPermit(effect)
  const run = <A>(key: string, body: (withPermit: WithPermit) => Effect.Effect<A>): Effect.Effect<A> =>
    Effect.suspend(() => {
      const previous = tails.get(key)
      const done = Deferred.makeUnsafe<void>()
      tails.set(key, done)
      // The lane opens for the next effect only after this one AND its predecessor are finished, even when this one
      // is interrupted while waiting, so an interrupted link never lets a later event overtake an earlier one.
      const release = Effect.andThen(
        previous === undefined ? Effect.void : Deferred.await(previous),
        Effect.sync(() => {
          Deferred.doneUnsafe(done, Exit.void)
          if (tails.get(key) === done) tails.delete(key)
        })
      )
      const effect = Effect.suspend(() => body(withPermit))
      return (previous === undefined ? effect : Effect.andThen(Deferred.await(previous), effect)).pipe(
        Effect.ensuring(release)
      )
    })
  return { run, size: () => tails.size }
}
