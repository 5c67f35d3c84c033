// Every option of `NatsEventBus.layer` is validated before anything connects: a bad value fails start-up with
// `NatsError` reason `Config` naming the option, the value (never a credential) and the accepted range, where it used
// to be accepted (`maxPendingPublishes: NaN`, then every publish timed out), written to the server as given
// (`ackWait: -5000` as -5 s) or silently replaced (0, NaN, Infinity as 30 s). Against a real server: the boundary
// values are accepted and reach the server as given, and a group name the server would refuse (`a/b`, NUL) now
// fails at `subscribe` with SubscribeError InvalidOptions instead of a `Transport` error from the server.
import { SubscribeError } from "@cqbus/core"
import { NatsError, NatsEventBus, type NatsEventBusConfig } from "@cqbus/nats"
import { AssetCreatedEvent } from "@cqbus/testkit/events"
import { AckPolicy, jetstreamManager } from "@nats-io/jetstream"
import { nanos } from "@nats-io/nats-core"
import { connect } from "@nats-io/transport-node"
import { Cause, Effect, Exit, Layer, Redacted } from "effect"
import fc from "fast-check"
import assert from "node:assert/strict"
import { test } from "node:test"
import { bus, run, server } from "./support/nats.ts"

/** Nothing listens on port 1: a config that got past validation would fail with reason `Connect`, at once. */
const NOWHERE = "nats://127.0.0.1:1"

/** Builds the layer and answers its typed failure. */
const startFailure = (config: NatsEventBusConfig): Promise<unknown> =>
  Effect.runPromise(Effect.scoped(Effect.exit(Layer.build(NatsEventBus.layer(config))))).then((exit) => {
    assert.ok(Exit.isFailure(exit), "start-up fails")
    const found = Cause.findErrorOption(exit.cause)
    assert.ok(found._tag === "Some", `a typed failure, not ${Cause.pretty(exit.cause)}`)
    return found.value
  })

const SECRET = "s3cret-Pa55word"

test("nats options: each bad option fails start-up with NatsError Config naming it and its range, before connecting", { timeout: 60_000 }, async () => {
  const cases: ReadonlyArray<readonly [NatsEventBusConfig, RegExp]> = [
    [{ maxPendingPublishes: NaN }, /maxPendingPublishes must be an integer from 1 to 1000000, got NaN/],
    [{ maxPendingPublishes: 0 }, /maxPendingPublishes must be an integer from 1 to 1000000, got 0/],
    [{ maxPendingPublishes: 1_000_001 }, /got 1000001/],
    [{ publishTimeout: -1 }, /publishTimeout must be a duration from 1ms to 1h, got -1ms/],
    [{ publishTimeout: NaN }, /publishTimeout must be a duration .*got NaN/],
    [{ checkTimeout: NaN }, /checkTimeout must be a duration .*got NaN/],
    [{ checkTimeout: "2 secs" as never }, /checkTimeout must be a duration .*got "2 secs"/],
    [{ reconnect: { wait: -250 } }, /reconnect\.wait must be a duration from 1ms to 1h, got -250ms/],
    [{ reconnect: { maxAttempts: -2 } }, /reconnect\.maxAttempts must be an integer from 0 to 1000000 or -1, got -2/],
    [{ reconnect: { jitter: Infinity } }, /reconnect\.jitter must be a duration .*got Infinity/],
    [{ connect: { timeout: 0 } }, /connect\.timeout must be a duration from 10ms to 10m, got 0/],
    [{ stream: { subjects: [] } }, /stream\.subjects must be a non-empty list of subjects, got an array of 0/],
    [{ stream: { subjects: ["cqc..events"] } }, /stream\.subjects\[0\] is not a valid subject/],
    [{ stream: { name: "EVENTS.V1" } }, /stream\.name must be a name of 1 to 255 characters/],
    [{ stream: { replicas: 6 } }, /stream\.replicas must be an integer from 1 to 5, got 6/],
    [{ stream: { maxAge: "50 millis" } }, /stream\.maxAge must be a duration from 100ms to 36500d, got "50 millis"/],
    [{ stream: { maxBytes: -2 } }, /stream\.maxBytes must be an integer from 1 to 9007199254740991 or -1, got -2/],
    [{ stream: { duplicateWindow: 0 } }, /stream\.duplicateWindow must be a duration from 100ms to 7d, got 0/],
    [{ stream: { discard: "oldest" as never } }, /stream\.discard must be one of "old", "new"/],
    [{ provisioning: "create" as never }, /provisioning must be one of "createOrUpdate", .*got "create"/],
    [{ deadLetters: { subjectPrefix: "dlq.>" } }, /deadLetters\.subjectPrefix must be a subject without wildcards/],
    [{ deadLetters: { stream: "DLQ/1" } }, /deadLetters\.stream must be a name/],
    [{ deadLetters: { maxAge: -1 } }, /deadLetters\.maxAge must be a duration from 100ms/],
    [{ deadLetters: { replicas: 0 } }, /deadLetters\.replicas must be an integer from 1 to 5, got 0/],
    [{ deadLetters: { storage: "disk" as never } }, /deadLetters\.storage must be one of "file", "memory", got "disk"/],
    [{ health: { stream: "a b" } }, /health\.stream must be a name/],
    [{ subscribe: { ackWait: -5000 } }, /subscribe\.ackWait must be a duration from 100ms to 1d, got -5s/],
    [{ subscribe: { ackWait: 0 } }, /subscribe\.ackWait must be a duration from 100ms to 1d, got 0/],
    [{ subscribe: { concurrency: 1e6 } }, /subscribe\.concurrency must be an integer from 1 to 10000/],
    [{ servers: [] }, /^invalid NATS bus configuration: servers must be a URL or a non-empty list of URLs, got an empty list$/],
    [{ tls: "yes" as never }, /tls must be true, false or \{ caFile, certFile, keyFile \}, got "yes"/]
  ]
  for (const [config, text] of cases) {
    const error = await startFailure({ servers: NOWHERE, ...config })
    assert.ok(error instanceof NatsError, `${JSON.stringify(config)}: a NatsError, got ${String(error)}`)
    assert.equal(error.reason, "Config", `${JSON.stringify(config)}: reason Config (validated before connecting), got ${error.message}`)
    assert.match(error.message, text)
  }
  // Credentials are never shown, not even when they are of the wrong kind.
  for (const config of [
    { password: SECRET as never },
    { token: SECRET as never },
    { nkeySeed: SECRET as never },
    { servers: [`nats://admin:${SECRET}@127.0.0.1:1`, `\n${SECRET}`] },
    { user: `${SECRET}\u0000` }
  ] satisfies ReadonlyArray<NatsEventBusConfig>) {
    const error = await startFailure({ servers: NOWHERE, ...config })
    assert.ok(error instanceof NatsError && error.reason === "Config", String(error))
    assert.ok(!error.message.includes(SECRET) && !String(error).includes(SECRET), `no credential in: ${error.message}`)
  }
  // A valid configuration gets past validation and fails only where it must: connecting to nowhere.
  const error = await startFailure({ servers: NOWHERE, password: Redacted.make(SECRET), user: "u" })
  assert.ok(error instanceof NatsError && error.reason === "Connect", String(error))
})

test("nats options: boundary values are accepted and reach the server as given", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { bus: b } = yield* bus({
      servers: [nats.url],
      reconnect: { maxAttempts: -1, wait: "1 millis", jitter: 0 },
      stream: {
        name: "OPT_EVENTS",
        subjects: ["cqc.events.v1.>"],
        maxAge: "100 millis",
        duplicateWindow: "100 millis",
        maxMessages: -1,
        maxBytes: -1,
        maxMessageSize: -1,
        replicas: 1
      },
      deadLetters: { stream: "OPT_DLQ", subjectPrefix: "opt.dlq", maxAge: "36500 days" },
      health: { stream: "OPT_HEALTH", subjectPrefix: "opt.health" },
      publishTimeout: "1 hours",
      checkTimeout: "1 hours",
      maxPendingPublishes: 1
    })
    yield* b.subscribe(AssetCreatedEvent, () => Effect.void, { group: "g".repeat(255), ackWait: "100 millis", concurrency: 10_000 })
    yield* b.subscribe(AssetCreatedEvent, () => Effect.void, { group: "edge", ackWait: "1 days", concurrency: 1, maxDeliver: 10_000 })
    const nc = yield* Effect.acquireRelease(Effect.promise(() => connect({ servers: nats.url })), (nc) => Effect.promise(() => nc.close()))
    const jsm = yield* Effect.promise(() => jetstreamManager(nc))
    const stream = yield* Effect.promise(() => jsm.streams.info("OPT_EVENTS"))
    assert.equal(stream.config.max_age, nanos(100))
    assert.equal(stream.config.duplicate_window, nanos(100))
    const short = yield* Effect.promise(() => jsm.consumers.info("OPT_EVENTS", "g".repeat(255)))
    assert.equal(short.config.ack_wait, nanos(100), "100 ms is written as 100 ms")
    const long = yield* Effect.promise(() => jsm.consumers.info("OPT_EVENTS", "edge"))
    assert.equal(long.config.ack_wait, nanos(86_400_000), "1 day is written as 1 day")
    const dlq = yield* Effect.promise(() => jsm.streams.info("OPT_DLQ"))
    assert.equal(dlq.config.max_age, nanos(36_500 * 86_400_000))
  })))

test("nats options: a group name the server refuses ('/', '\\', NUL) fails at subscribe with InvalidOptions, not Transport", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { bus: b } = yield* bus({ servers: nats.url, stream: { name: "OPT_GROUPS", subjects: ["cqc.events.v1.>"] } })
    const nc = yield* Effect.acquireRelease(Effect.promise(() => connect({ servers: nats.url })), (nc) => Effect.promise(() => nc.close()))
    const jsm = yield* Effect.promise(() => jetstreamManager(nc))
    const refused: Array<string> = []
    for (const group of ["a/b", "a\u0000b", "a\\b"]) {
      // The server is the judge: it refuses the name itself (what cqbus used to pass on, failing as `Transport`).
      const direct = yield* Effect.promise(() =>
        jsm.consumers.add("OPT_GROUPS", { durable_name: group, ack_policy: AckPolicy.Explicit }).then(() => "created", (e: Error) => e.message)
      )
      assert.notEqual(direct, "created", `the server refuses ${JSON.stringify(group)}`)
      const error = yield* Effect.flip(b.subscribe(AssetCreatedEvent, () => Effect.void, { group }))
      assert.ok(error instanceof SubscribeError, String(error))
      assert.equal(error.reason, "InvalidOptions", `${JSON.stringify(group)}: ${error.message}`)
      assert.match(error.message, /group must be a name of 1 to 255 characters without whitespace, control characters, "\.", "\*", ">", "\/" or "\\"/)
      refused.push(group)
    }
    assert.equal(refused.length, 3)
    const consumers = yield* Effect.promise(async () => {
      const names: Array<string> = []
      for await (const info of jsm.consumers.list("OPT_GROUPS")) names.push(info.name)
      return names
    })
    assert.deepEqual(consumers, [], "nothing reached the server")
  })))

const numberish = fc.oneof(
  { arbitrary: fc.constant(undefined), weight: 12 },
  { arbitrary: fc.integer({ min: 1, max: 5 }), weight: 4 },
  { arbitrary: fc.constantFrom("1 second", "100 millis", "5 seconds"), weight: 4 },
  { arbitrary: fc.double(), weight: 1 },
  { arbitrary: fc.constantFrom(NaN, Infinity, -Infinity, 0, -1, -5000, 1e9), weight: 1 },
  { arbitrary: fc.string({ maxLength: 10 }), weight: 1 }
)

test("property: arbitrary numeric and duration NATS options fail with NatsError Config, or get past validation", { timeout: 120_000 }, async () => {
  const runs = fc.sample(
    fc.record({
      maxPendingPublishes: numberish,
      publishTimeout: numberish,
      checkTimeout: numberish,
      reconnect: fc.record({ maxAttempts: numberish, wait: numberish, jitter: numberish }, { requiredKeys: [] }),
      stream: fc.record({ maxAge: numberish, replicas: numberish, maxMessages: numberish, duplicateWindow: numberish }, { requiredKeys: [] }),
      subscribe: fc.record({ ackWait: numberish, concurrency: numberish }, { requiredKeys: [] })
    }, { requiredKeys: [] }),
    { numRuns: 150, seed: 14 }
  )
  const outcomes = { config: 0, connect: 0 }
  for (const config of runs) {
    const error = await startFailure({ servers: NOWHERE, ...(config as NatsEventBusConfig) })
    assert.ok(error instanceof NatsError && (error.reason === "Config" || error.reason === "Connect"), `${JSON.stringify(config)}: ${String(error)}`)
    outcomes[error.reason === "Config" ? "config" : "connect"]++
  }
  console.log(`options property (nats): ${JSON.stringify({ runs: runs.length, ...outcomes })}`)
  assert.ok(outcomes.config > 0 && outcomes.connect > 0, "the sample covers both outcomes")
})
