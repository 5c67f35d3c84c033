/**
 * The typed `EventBus` over NATS JetStream, in one layer: connection, stream provisioning and the bus. `layer` takes
 * the configuration as a value; `layerConfig` reads it from the environment through Effect `Config` (`NATS_URL`,
 * credentials, stream and service names, per-topic persistence), so twelve-factor services need no wiring code.
 *
 * @module
 */
import { EventBus, type Persistence, TopicConfig, type Transport } from "@cqbus/core"
import { checkTopic, redactSecrets } from "@cqbus/core/backend"
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

/** Why the environment cannot configure the bus, as every start-up failure: `NatsError` reason `Config`. */
const environmentError = (message: string): NatsError =>
  new NatsError({
    reason: "Config",
    message: redactSecrets(`cannot read the NATS configuration from the environment: ${message}`)
  })

/**
 * `CQBUS_TOPICS` (`TopicConfig.parseList`'s text form) as `topics`, each topic name checked here so a bad one fails
 * naming the variable before anything connects.
 */
const topicsOf = (text: string | undefined): Effect.Effect<Readonly<Record<string, Persistence>>, NatsError> => {
  if (text === undefined) return Effect.succeed({})
  const parsed = TopicConfig.parseList("CQBUS_TOPICS", text)
  if ("problem" in parsed) return Effect.fail(environmentError(parsed.problem.message))
  for (const topic of Object.keys(parsed.topics)) {
    const invalid = checkTopic(topic, "subject")
    if (invalid !== undefined) return Effect.fail(environmentError(`CQBUS_TOPICS: ${invalid.message}`))
  }
  return Effect.succeed(parsed.topics)
}

/** `CQBUS_PERSISTENCE`, the persistence of topics `topics` does not name: one of persistent, ephemeral, auto. */
const persistenceOf = (text: string | undefined): Effect.Effect<Persistence | undefined, NatsError> => {
  if (text === undefined) return Effect.succeed(undefined)
  const value = text.trim()
  const found = TopicConfig.checkSettings("CQBUS_PERSISTENCE", value)
  return found === undefined ? Effect.succeed(value as Persistence) : Effect.fail(environmentError(found.message))
}

/**
 * The bus over NATS JetStream, configured from the environment:
 * - `NATS_URL`: comma-separated servers, default `nats://127.0.0.1:4222`;
 * - `NATS_USER` + `NATS_PASSWORD`, `NATS_TOKEN`, `NATS_NKEY_SEED`, `NATS_CREDS` (a creds file): credentials;
 * - `NATS_STREAM`: the bus's stream, default `CQC_EVENTS`;
 * - `CQBUS_SERVICE_NAME`: the CloudEvents source and client name;
 * - `CQBUS_TOPICS`: per-topic persistence, `topic=persistent|ephemeral|auto` pairs separated by commas, e.g.
 *   `power.telemetry.v1.reading=ephemeral,cqc.events.v1.order_placed=persistent` (`topics`);
 * - `CQBUS_PERSISTENCE`: the persistence of every other topic, `persistent` (the default), `ephemeral` or `auto`
 *   (`persistence`).
 *
 * Secrets are read as `Redacted` and never logged. `overrides` wins over the environment, per topic for `topics`. An
 * unreadable or malformed setting fails with `NatsError` reason `Config` naming the variable, like every other
 * start-up failure.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  overrides: NatsEventBusConfig = {}
): Layer.Layer<EventBus.EventBus | Transport.Transport | NatsTransport.NatsTransport | NatsConnection.NatsConnection, NatsError> =>
  Layer.unwrap(
    Effect.gen(function*() {
      const env = yield* Effect.mapError(
        Config.all({
          url: Config.String("NATS_URL").pipe(Config.withDefault("nats://127.0.0.1:4222")),
          user: optional(Config.String("NATS_USER")),
          password: optional(Config.Redacted("NATS_PASSWORD")),
          token: optional(Config.Redacted("NATS_TOKEN")),
          nkeySeed: optional(Config.Redacted("NATS_NKEY_SEED")),
          credsFile: optional(Config.String("NATS_CREDS")),
          stream: optional(Config.String("NATS_STREAM")),
          source: optional(Config.String("CQBUS_SERVICE_NAME")),
          topics: optional(Config.String("CQBUS_TOPICS")),
          persistence: optional(Config.String("CQBUS_PERSISTENCE"))
        }),
        (error) => environmentError(error.message)
      )
      const topics = { ...(yield* topicsOf(env.topics)), ...overrides.topics }
      const persistence = yield* persistenceOf(env.persistence)
      const config: NatsEventBusConfig = {
        servers: env.url.split(",").map((s) => s.trim()).filter((s) => s.length > 0),
        ...(env.user === undefined ? {} : { user: env.user }),
        ...(env.password === undefined ? {} : { password: env.password }),
        ...(env.token === undefined ? {} : { token: env.token }),
        ...(env.nkeySeed === undefined ? {} : { nkeySeed: env.nkeySeed }),
        ...(env.credsFile === undefined ? {} : { credsFile: env.credsFile }),
        ...(env.source === undefined ? {} : { source: env.source }),
        ...(persistence === undefined ? {} : { persistence }),
        ...overrides,
        stream: { ...(env.stream === undefined ? {} : { name: env.stream }), ...overrides.stream },
        ...(Object.keys(topics).length === 0 ? {} : { topics })
      }
      return layer(config)
    })
  )
