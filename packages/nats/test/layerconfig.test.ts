// NatsEventBus.layerConfig reads per-topic persistence from the environment (CQBUS_TOPICS, CQBUS_PERSISTENCE), against a
// real nats-server per test: a topic listed there is configured when the bus starts, `overrides.topics` wins per
// topic, and a malformed value fails start-up with NatsError reason Config naming the variable. The environment is
// given through Effect's ConfigProvider, so the process's own environment plays no part.
import { defineEvent, EventBus, type EventBusShape, PublishError } from "@cqbus/core"
import { type NatsEventBusConfig, NatsError, NatsEventBus } from "@cqbus/nats"
import { failureOf } from "@cqbus/testkit"
import { AssetCreatedEvent, AssetCreatedSchema } from "@cqbus/testkit/events"
import { ConfigProvider, Context, Effect, Exit, Layer, Option, type Scope } from "effect"
import assert from "node:assert/strict"
import { test } from "node:test"
import { run, server } from "./support/nats.ts"

/** Builds `layerConfig(overrides)` into the current scope, reading `env` as the environment. */
const busFrom = (
  env: Record<string, string>,
  overrides?: NatsEventBusConfig
): Effect.Effect<EventBusShape, NatsError, Scope.Scope> =>
  Layer.build(NatsEventBus.layerConfig(overrides)).pipe(
    Effect.map((context) => Context.get(context, EventBus.EventBus)),
    Effect.provideService(ConfigProvider.ConfigProvider, ConfigProvider.fromEnv({ env }))
  )

/** How building `layerConfig` with `env` ended (released at once). */
const exitFrom = (env: Record<string, string>): Effect.Effect<Exit.Exit<EventBusShape, NatsError>> =>
  Effect.exit(Effect.scoped(busFrom(env)))

test("nats layerConfig: CQBUS_TOPICS configures its topics at start-up; overrides.topics wins per topic", { timeout: 30_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const bus = yield* busFrom(
      {
        NATS_URL: nats.url,
        CQBUS_TOPICS: " power.telemetry.v1.reading = ephemeral , cqc.live.v1.tick=auto,",
        CQBUS_SERVICE_NAME: "layerconfig-test"
      },
      { topics: { "cqc.live.v1.tick": "ephemeral" } }
    )
    const reading = yield* bus.topics.get("power.telemetry.v1.reading")
    assert.ok(Option.isSome(reading), "the topic from CQBUS_TOPICS is configured")
    assert.equal(reading.value.persistence, "ephemeral")
    assert.equal(reading.value.effective, "ephemeral")
    const tick = yield* bus.topics.get("cqc.live.v1.tick")
    assert.ok(Option.isSome(tick))
    assert.equal(tick.value.persistence, "ephemeral", "overrides.topics wins over CQBUS_TOPICS for the same topic")
    assert.deepEqual((yield* bus.topics.list).map((entry) => entry.topic), ["cqc.live.v1.tick", "power.telemetry.v1.reading"])
  })))

test("nats layerConfig: CQBUS_PERSISTENCE is the persistence of unlisted topics; overrides.persistence wins", { timeout: 30_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const Other = defineEvent(AssetCreatedSchema, { topic: "cqc.other.v1.asset_created" })
    const env = {
      NATS_URL: nats.url,
      CQBUS_PERSISTENCE: "ephemeral",
      CQBUS_TOPICS: `${AssetCreatedEvent.topic}=persistent`
    }
    const bus = yield* busFrom(env)
    const unlisted = yield* bus.publish(Other, { assetId: "u1" })
    assert.equal(unlisted.ephemeral, true, `an unlisted topic follows CQBUS_PERSISTENCE: ${JSON.stringify(unlisted)}`)
    const listed = yield* bus.publish(AssetCreatedEvent, { assetId: "l1" })
    assert.equal(listed.stream, "CQC_EVENTS", `a topic CQBUS_TOPICS lists persistent is stored: ${JSON.stringify(listed)}`)
    assert.equal(listed.ephemeral, undefined)

    const overridden = yield* busFrom(env, { persistence: "persistent" })
    const stored = yield* overridden.publish(AssetCreatedEvent, { assetId: "o1" })
    assert.equal(stored.ephemeral, undefined)
    const other = yield* Effect.flip(overridden.publish(Other, { assetId: "o2" }))
    assert.ok(other instanceof PublishError, String(other))
    assert.equal(other.reason, "NoStream", `with overrides.persistence "persistent" an unlisted topic no stream captures is not sent ephemeral: ${other.message}`)
  })))

test("nats layerConfig: a malformed CQBUS_TOPICS or CQBUS_PERSISTENCE fails start-up with NatsError Config naming it", { timeout: 30_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const cases: ReadonlyArray<readonly [Record<string, string>, RegExp]> = [
      [{ CQBUS_TOPICS: "power.telemetry.v1.reading=sometimes" }, /CQBUS_TOPICS.*"power\.telemetry\.v1\.reading=sometimes"/],
      [{ CQBUS_TOPICS: "power.telemetry.v1.reading=ephemeral,cqc.live.v1.tick" }, /CQBUS_TOPICS.*"cqc\.live\.v1\.tick"/],
      [{ CQBUS_TOPICS: "power.telemetry.v1.*=ephemeral" }, /CQBUS_TOPICS: .*power\.telemetry\.v1\.\*/],
      [{ CQBUS_PERSISTENCE: "forever" }, /CQBUS_PERSISTENCE must be one of "persistent", "ephemeral", "auto", got "forever"/]
    ]
    for (const [env, expected] of cases) {
      const error = failureOf(yield* exitFrom({ NATS_URL: nats.url, ...env }))
      assert.ok(error instanceof NatsError, `${JSON.stringify(env)}: a NatsError, got ${String(error)}`)
      assert.equal(error.reason, "Config", error.message)
      assert.match(error.message, expected)
      console.log(`${JSON.stringify(env)} → ${String(error)}`)
    }
  })))
