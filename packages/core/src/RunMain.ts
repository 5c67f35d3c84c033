/**
 * Graceful shutdown for a service's main program: SIGTERM and SIGINT interrupt the main fiber, so every scope closes
 * in order (docs/operations.md, "Shutdown"). Built on Effect's `Runtime.makeRunMain`, with the signals read from the
 * `process` global that Node, Bun and Deno all provide, so the core needs no `node:*` import.
 *
 * @module
 */
import { Cause, Exit, Runtime } from "effect"
import type { Effect } from "effect"

/**
 * Options of `runMain`.
 *
 * @since 0.1.0
 * @category models
 */
export interface RunMainOptions {
  /** The signals that start a graceful shutdown (default `["SIGTERM", "SIGINT"]`). */
  readonly signals?: ReadonlyArray<"SIGTERM" | "SIGINT" | "SIGHUP">
  /** Do not log a failure of the main Effect (Effect's `disableErrorReporting`; default false). */
  readonly disableErrorReporting?: boolean
}

/** What `runMain` needs of the host's `process` global. */
interface HostProcess {
  readonly on: (signal: string, listener: () => void) => unknown
  readonly off?: (signal: string, listener: () => void) => unknown
  readonly exit: (code?: number) => never
}

const hostProcess = (): HostProcess | undefined => {
  const candidate = (globalThis as { readonly process?: Partial<HostProcess> }).process
  return typeof candidate?.on === "function" && typeof candidate.exit === "function" ? candidate as HostProcess : undefined
}

/**
 * Runs `effect` until it ends or one of `signals` arrives, then exits the process. The first signal interrupts the
 * effect, which closes its scopes (the graceful part: nothing is dropped, see docs/operations.md "Shutdown"); a second
 * signal while that runs exits at once with code 130 (unfinished deliveries come back after `ackWait`). Exit codes:
 * 0 when the effect succeeded or a signal ended it, 130 when something else interrupted it, and Effect's
 * `Runtime.defaultTeardown` code (1 unless the error sets `Runtime.errorExitCode`) when it failed.
 *
 * @example
 * ```ts
 * import { EventBus, runMain } from "@cqbus/core"
 * import { Effect, Layer } from "effect"
 *
 * const service = Effect.gen(function*() {
 *   const bus = yield* EventBus.EventBus
 *   // yield* bus.subscribe(...)
 *   return yield* Effect.never
 * })
 * runMain(Effect.scoped(service).pipe(Effect.provide(EventBus.layerMemory())))
 * ```
 *
 * @since 0.1.0
 * @category running
 */
export const runMain = <E, A>(effect: Effect.Effect<A, E>, options: RunMainOptions = {}): void => {
  const host = hostProcess()
  const signals = options.signals ?? ["SIGTERM", "SIGINT"]
  let signalled = false
  const run = Runtime.makeRunMain(({ fiber, teardown }) => {
    const onSignal = () => {
      if (signalled) return host?.exit(130)
      signalled = true
      fiber.interruptUnsafe()
    }
    if (host !== undefined) for (const signal of signals) host.on(signal, onSignal)
    fiber.addObserver((exit) => {
      if (host !== undefined && host.off !== undefined) for (const signal of signals) host.off(signal, onSignal)
      // A shutdown the operator asked for is a success; any other interruption keeps Effect's code (130).
      const asked = signalled && Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause)
      teardown(exit, (code) => host?.exit(asked ? 0 : code))
    })
  })
  run(effect, { disableErrorReporting: options.disableErrorReporting === true })
}
