/**
 * `@cqbus/recovery`: a defect in a handler (a thrown exception, `Effect.die`, a bug) becomes a typed `HandlerDefect`
 * failure that carries the message and the stack, and is logged: with its stack the first time a message dies of it,
 * in one line on its later retries. Retry middleware and the dead-letter reason can
 * then see it like any other failure. Without this plugin a defect still never kills a subscription: the bus retries
 * it with backoff and dead-letters it after `maxDeliver`, as error tag `Defect`.
 *
 * @module
 */
import { type Middleware } from "@cqbus/core"
import { Options, printable, TaggedErrorBase } from "@cqbus/core/backend"
import { Cause, Effect } from "effect"

/**
 * A handler died. `defect` is what it died with; `message` and `defectStack` describe it for logs and dead letters.
 *
 * @since 0.1.0
 * @category errors
 */
export class HandlerDefect extends TaggedErrorBase<{
  readonly topic: string
  readonly eventId: string
  readonly message: string
  /** The stack of the original defect, when it was an `Error`. */
  readonly defectStack: string | undefined
  readonly defect: unknown
}> {
  readonly _tag = "HandlerDefect"
}

/**
 * Options of `recovery`.
 *
 * @since 0.1.0
 * @category models
 */
export interface RecoveryOptions {
  /**
   * Log each recovered defect at error level (default true): with its cause (the stack) the first time an event dies
   * of a defect with that message, as one line without the stack when it dies of it again (an in-process retry or a
   * redelivery to this process).
   */
  readonly log?: boolean
}

/**
 * How many (event, defect message) pairs each `recovery()` remembers having printed the stack of. A message is retried
 * a few times within seconds to minutes, so a small window suffices; the oldest entry is forgotten first, which at
 * worst prints one stack again.
 */
const REMEMBERED = 1024

/** Remembers which defects of which events had their stack logged; bounded, oldest forgotten first. */
class SeenStacks {
  readonly #seen = new Set<string>()
  /** `true` the first time `key` is seen (within the window). */
  first(key: string): boolean {
    const seen = this.#seen
    if (seen.has(key)) return false
    seen.add(key)
    if (seen.size > REMEMBERED) seen.delete(seen.values().next().value!)
    return true
  }
}

const describe = (defect: unknown): { readonly message: string; readonly stack: string | undefined } =>
  defect instanceof Error
    ? { message: `${defect.name}: ${defect.message}`, stack: defect.stack }
    : { message: typeof defect === "string" ? defect : String(defect), stack: undefined }

/**
 * Turns defects into `HandlerDefect` failures. Put it inside `retry` so retries see them:
 * `pipe(handler, recovery(), retry())`. Each recovered defect is logged at error level, with the stack only the first
 * time an event dies of that defect (each `recovery()` remembers the last 1024 such pairs), so a message that keeps
 * failing prints its stack once rather than on every retry.
 *
 * @example
 * ```ts
 * import { Effect, pipe } from "effect"
 * import { recovery } from "@cqbus/recovery"
 * const handler = pipe((_: unknown) => Effect.sync(() => JSON.parse("{")), recovery())
 * ```
 *
 * @since 0.1.0
 * @category middleware
 */
export const recovery = (options: RecoveryOptions = {}): Middleware<HandlerDefect> => {
  Options.orThrow(Options.first(() => Options.object("recovery", options), () => Options.boolean("recovery.log", options.log)))
  const log = options.log ?? true
  const seen = new SeenStacks()
  return (handler) => (event, delivery) =>
    Effect.suspend(() => handler(event, delivery)).pipe(
      Effect.catchDefect((defect) => {
        const { message, stack } = describe(defect)
        const error = new HandlerDefect({
          topic: delivery.topic,
          eventId: delivery.eventId,
          message,
          defectStack: stack,
          defect
        })
        if (!log) return Effect.fail(error)
        // The event id is the peer's `ce-id`: escaped, so a CR or LF in it cannot forge a log line.
        const where = `handler defect on ${delivery.topic} (event ${printable(delivery.eventId)}, attempt ${delivery.attempt})`
        // Without an event id there is nothing to recognize the message by: the first attempt prints the stack.
        const first = delivery.eventId === ""
          ? delivery.attempt === 1
          : seen.first(`${delivery.topic}\u0000${delivery.eventId}\u0000${message}`)
        const line = first
          ? Effect.logError(where, Cause.die(defect))
          : Effect.logError(`${where}: ${message} (the stack was logged when this event first died of it)`)
        return Effect.andThen(line, Effect.fail(error))
      })
    )
}
