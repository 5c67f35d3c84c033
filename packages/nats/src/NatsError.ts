/**
 * The one error of the NATS backend's start-up: connecting, reaching JetStream, provisioning streams and reading the
 * configuration all fail with `NatsError`, told apart by its `reason`, so an application handles them with one
 * `Effect.catchTag("NatsError", ...)`. Messages never carry credentials (core's redaction rules).
 *
 * @module
 */
import { TaggedErrorBase } from "@cqbus/core/backend"

/**
 * Why the NATS backend could not start:
 * - `Connect`: no connection to any of the servers (refused, unreachable, timed out);
 * - `Authentication`: the server refused the credentials (authorization violation, expired credentials); trying again
 *   with the same credentials cannot help, so `connect.retry` does not;
 * - `Tls`: the TLS handshake cannot succeed (the server's certificate is not trusted or does not match, TLS required
 *   on one side only); not retried either;
 * - `JetStreamUnavailable`: connected, but JetStream does not answer (not enabled on the server or the account);
 * - `Provision`: a stream could not be created, updated or validated (subjects overlap with another stream, a
 *   `validateOnly` difference, a missing stream, a permission error);
 * - `Config`: the configuration itself is unusable: an option out of its accepted range (named, with the range;
 *   checked before connecting), a credentials file that cannot be read, ...
 *
 * @since 0.1.0
 * @category errors
 */
export type NatsErrorReason = "Connect" | "Authentication" | "Tls" | "JetStreamUnavailable" | "Provision" | "Config"

/**
 * The NATS backend could not start. `stream` names the stream a `Provision` failure concerns; `code` is the
 * JetStream API error code (`err_code`) when the server gave one.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { EventBus } from "@cqbus/core"
 * import { NatsEventBus } from "@cqbus/nats"
 * const program = Effect.gen(function*() {
 *   const bus = yield* EventBus.EventBus
 *   yield* bus.check
 * }).pipe(
 *   Effect.provide(NatsEventBus.layer({ servers: "nats://127.0.0.1:4222" })),
 *   Effect.catchTag("NatsError", (error) => Effect.logError(`NATS ${error.reason}: ${error.message}`))
 * )
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class NatsError extends TaggedErrorBase<{
  readonly reason: NatsErrorReason
  readonly message: string
  readonly stream?: string
  readonly code?: number
}> {
  readonly _tag = "NatsError"
}
