/**
 * `@cqbus/recovery`: a defect in a handler (a thrown exception, `Effect.die`, a bug) becomes a typed `HandlerDefect`
 * failure that carries the message and the stack, and is logged once. Retry middleware and the dead-letter reason can
 * then see it like any other failure. Without this plugin a defect still never kills a subscription: the bus retries
 * it with backoff and dead-letters it after `maxDeliver`, as error tag `Defect`.
 *
 * @module
 */
import type { Middleware } from "@cqbus/core"
import { Cause, Data, Effect } from "effect"

/**
 * A handler died. `defect` is what it died with; `message` and `defectStack` describe it for logs and dead letters.
 *
 * @since 0.1.0
 * @category errors
 */
export class HandlerDefect extends Data.Error<{
  readonly topic: string
  readonly eventId: string
  readonly message: string
  /** The stack of the original defect, when it was an `Error`. */
  readonly defectStack: string | undefined
  readonly defect: unknown
}> {
  /** @since 0.1.0 */
  readonly _tag = "HandlerDefect"
}

/**
 * Options of `recovery`.
 *
 * @since 0.1.0
 * @category models
 */
export interface RecoveryOptions {
  /** Log each recovered defect at error level with its cause (default true). */
  readonly log?: boolean
}

const describe = (defect: unknown): { readonly message: string; readonly stack: string | undefined } =>
  defect instanceof Error
    ? { message: `${defect.name}: ${defect.message}`, stack: defect.stack }
    : { message: typeof defect === "string" ? defect : String(defect), stack: undefined }

/**
 * Turns defects into `HandlerDefect` failures. Put it inside `retry` so retries see them:
 * `pipe(handler, recovery(), retry())`.
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
  const log = options.log ?? true
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
        return log
          ? Effect.andThen(
            Effect.logError(`handler defect on ${delivery.topic} (event ${delivery.eventId}, attempt ${delivery.attempt})`,
              Cause.die(defect)),
            Effect.fail(error)
          )
          : Effect.fail(error)
      })
    )
}
