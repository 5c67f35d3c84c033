/**
 * The typed `EventBus` over NATS JetStream, in one layer: connection, stream provisioning and the bus. `layer` takes
 * the configuration as a value; `layerConfig` reads it from the environment through Effect `Config` (`NATS_URL`,
 * credentials, stream and service names), so twelve-factor services need no wiring code.
 *
 * @module
 */
import { EventBus, type Transport } from "@cqbus/core"
import { redactSecrets } from "@cqbus/core/backend"
import { Config, Effect, Layer, Option } from "effect"
import type { NatsEventBusConfig } from "./NatsConfig.ts"
import type * as NatsConnection from "./NatsConnection.ts"
import { configError } from "./internal/options.ts"
import { NatsError } from "./NatsError.ts"
import * as NatsTransport from "./NatsTransport.ts"

/**
 * The bus over NATS JetStream; also provides `Transport`, `NatsTransport` and `NatsConnection`. Start-up fails only
 * with `NatsError` (reason `Connect`, `JetStreamUnavailable`, `Provision` or `Config`).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { EventBus } from "@cqbus/core"
 * import { NatsEventBus } from "@cqbus/nats"
 * const program = Effect.gen(function*() {
 *   const bus = yield* EventBus.EventBus
 *   yield* bus.check
 * })
 * Effect.runPromise(
 *   program.pipe(Effect.provide(NatsEventBus.layer({ servers: "nats://127.0.0.1:4222", source: "billing" })))
 * )
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  config: NatsEventBusConfig = {}
): Layer.Layer<EventBus.EventBus | Transport.Transport | NatsTransport.NatsTransport | NatsConnection.NatsConnection, NatsError> =>
  // The transport checks the whole configuration (the bus part included) before connecting, so the bus's own check
  // cannot fail here; its `ConfigError` is mapped all the same, so start-up fails only with `NatsError`.
  Layer.effect(
    EventBus.EventBus,
    Effect.mapError(EventBus.make(config), (error) => configError({ option: error.option, message: error.message }))
  ).pipe(Layer.provideMerge(NatsTransport.layer(config)))

const optional = <A>(config: Config.Config<A>): Config.Config<A | undefined> =>
  Config.option(config).pipe(Config.map(Option.getOrUndefined))

/**
 * The bus over NATS JetStream, configured from the environment: `NATS_URL` (comma-separated servers, default
 * `nats://127.0.0.1:4222`), `NATS_USER` + `NATS_PASSWORD`, `NATS_TOKEN`, `NATS_NKEY_SEED`, `NATS_CREDS` (a creds
 * file), `NATS_STREAM` (default `CQC_EVENTS`), `CQBUS_SERVICE_NAME` (the CloudEvents source and client name).
 * Secrets are read as `Redacted` and never logged. `overrides` wins over the environment. An unreadable setting fails
 * with `NatsError` reason `Config`, like every other start-up failure.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  overrides: NatsEventBusConfig = {}
): Layer.Layer<EventBus.EventBus | Transport.Transport | NatsTransport.NatsTransport | NatsConnection.NatsConnection, NatsError> =>
  Layer.unwrap(
    Effect.gen(function*() {
      const url = yield* Config.String("NATS_URL").pipe(Config.withDefault("nats://127.0.0.1:4222"))
      const user = yield* optional(Config.String("NATS_USER"))
      const password = yield* optional(Config.Redacted("NATS_PASSWORD"))
      const token = yield* optional(Config.Redacted("NATS_TOKEN"))
      const nkeySeed = yield* optional(Config.Redacted("NATS_NKEY_SEED"))
      const credsFile = yield* optional(Config.String("NATS_CREDS"))
      const stream = yield* optional(Config.String("NATS_STREAM"))
      const source = yield* optional(Config.String("CQBUS_SERVICE_NAME"))
      const config: NatsEventBusConfig = {
        servers: url.split(",").map((s) => s.trim()).filter((s) => s.length > 0),
        ...(user === undefined ? {} : { user }),
        ...(password === undefined ? {} : { password }),
        ...(token === undefined ? {} : { token }),
        ...(nkeySeed === undefined ? {} : { nkeySeed }),
        ...(credsFile === undefined ? {} : { credsFile }),
        ...(source === undefined ? {} : { source }),
        ...overrides,
        stream: { ...(stream === undefined ? {} : { name: stream }), ...overrides.stream }
      }
      return layer(config)
    }).pipe(Effect.mapError((error) =>
      new NatsError({
        reason: "Config",
        message: redactSecrets(`cannot read the NATS configuration from the environment: ${error.message}`)
      })
    ))
  )
