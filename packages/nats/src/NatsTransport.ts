/**
 * The NATS JetStream backend of the `Transport` port: publishes wait for JetStream's PubAck (the event id rides in
 * `Nats-Msg-Id` for dedupe), subscriptions are durable pull consumers with a bounded consume loop, outcomes map to
 * ack / nak-with-delay / dead-letter stream + term, and closing a subscription drains it (DESIGN §4). This module
 * assembles the `TransportShape` from its parts in `internal/` (publish engine, stream provisioning, consumer setup,
 * pull loop, fetch batches, ack verbs, dead letters); every nats.js error is converted once, in `internal/errors.ts`.
 *
 * @module
 */
import {
  type ConsumerLag,
  HealthError,
  PublishError,
  SubscribeError,
  Transport
} from "@cqbus/core"
import { checkTopic, type TransportShape } from "@cqbus/core/backend"
import { jetstream, type JetStreamClient, type JetStreamManager, jetstreamManager } from "@nats-io/jetstream"
import { type NatsConnection as NatsClient, nuid } from "@nats-io/nats-core"
import { Context, Duration, Effect, Layer, type Scope, SubscriptionRef } from "effect"
import { Acker } from "./internal/acks.ts"
import { setUpConsumer } from "./internal/consumerSetup.ts"
import { startCoreConsumer } from "./internal/coreConsumer.ts"
import * as DeadLetterStore from "./internal/deadLetterStore.ts"
import { DeadLetterWriter, readDeadLetters } from "./internal/deadLetters.ts"
import { fetchBatch } from "./internal/fetchBatch.ts"
import {
  isJetStreamDisabled,
  toHealthError,
  toJetStreamUnavailable,
  toPublishError,
  toSubscribeError
} from "./internal/errors.ts"
import { EncodedHeaders, encodeHeaders } from "./internal/headers.ts"
import { checkConfig, configError } from "./internal/options.ts"
import { provisionStreams } from "./internal/provision.ts"
import { make as makePublisher } from "./internal/publisher.ts"
import * as StreamRoutes from "./internal/streams.ts"
import * as TopicTable from "./internal/topicRegistry.ts"
import { startPullConsumer } from "./internal/pullLoop.ts"
import type { NatsEventBusConfig } from "./NatsConfig.ts"
import { resolveConfig } from "./NatsConfig.ts"
import * as NatsConnection from "./NatsConnection.ts"
import { NatsError } from "./NatsError.ts"

/**
 * NATS-specific facts and handles beside the generic `Transport`.
 *
 * @since 0.1.0
 * @category models
 */
export interface NatsTransportShape {
  /** The underlying connection (for request-reply, KV, or anything cqbus does not wrap). */
  readonly connection: NatsClient
  /** The bus's main stream: where events of its default topics are stored. */
  readonly stream: string
  /**
   * The event streams of the configuration, the main one first, then `streams` in order (own ones and those of other
   * services the bus reads); a subscription may also read a stream the server knows beyond these.
   */
  readonly streams: ReadonlyArray<string>
  /** The stream dead letters go to. */
  readonly deadLetterStream: string
  /** The connection state as it changes. */
  readonly state: SubscriptionRef.SubscriptionRef<NatsConnection.ConnectionState>
}

/** A subscription's consumer, as the capabilities report it. */
interface LiveConsumer {
  readonly stream: string
  readonly topic: string
  readonly group: string | undefined
  readonly name: string
  readonly draining: () => boolean
  /** When its oldest running handler started (`Date.now()` ms), `undefined` when none runs. */
  readonly oldestRunningSince: () => number | undefined
  /** For an ephemeral topic's core subscription (no consumer on the server): its running and buffered events. */
  readonly core?: { readonly running: () => number; readonly buffered: () => number }
}

/**
 * Builds the transport over a connection (opened here or injected) and provisions its streams; everything is
 * released when the scope closes. Every start-up failure is a `NatsError` (`Connect`, `JetStreamUnavailable`,
 * `Provision`, `Config`).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  config: NatsEventBusConfig = {}
): Effect.Effect<
  { readonly transport: TransportShape; readonly nats: NatsTransportShape; readonly connection: NatsConnection.ManagedConnection },
  NatsError,
  Scope.Scope
> =>
  Effect.gen(function*() {
    // Before anything connects: a bad option must not reach the server (or silently become a default).
    const invalid = checkConfig(config)
    if (invalid !== undefined) return yield* configError(invalid)
    const resolved = resolveConfig(config)
    const managed = yield* NatsConnection.acquire(config, "nats://127.0.0.1:4222")
    const { nc, state } = managed
    const js: JetStreamClient = jetstream(nc)
    // A bus whose topics may all travel over core NATS (`persistence` "ephemeral" or "auto") also starts without
    // JetStream; one that stores by default needs it.
    const coreAllowed = resolved.persistence !== "persistent"
    const { jetStream, jsm } = yield* Effect.tryPromise({
      // `jetstreamManager` asks the server for the account info ($JS.API.INFO) unless told not to; "skip" promises no
      // management call at start-up (accounts may not be allowed any), so it must not probe either.
      try: async (): Promise<{ readonly jetStream: boolean; readonly jsm: JetStreamManager }> => {
        try {
          return { jetStream: true, jsm: await jetstreamManager(nc, { checkAPI: resolved.provisioning !== "skip" }) }
        } catch (cause) {
          if (!coreAllowed || !isJetStreamDisabled(cause)) throw cause
          return { jetStream: false, jsm: await jetstreamManager(nc, { checkAPI: false }) }
        }
      },
      catch: toJetStreamUnavailable
    })
    const stream = resolved.stream.name
    // Without JetStream there is nothing to provision, and routing knows the streams of the configuration only.
    let onServer: ReadonlyMap<string, ReadonlyArray<string>> = new Map()
    if (jetStream) onServer = yield* provisionStreams(jsm, resolved)
    else yield* Effect.logWarning(`cqbus: JetStream is not enabled on the server; every topic travels over core NATS (persistence "${resolved.persistence}")`)
    const routes = StreamRoutes.make(jsm, resolved, onServer)
    const topics = TopicTable.make({ routes, persistence: resolved.persistence, jetStream })
    // Created before the `closed` flag's finalizer, so on close the flag is set first and the engine then waits only
    // for publishes already sent.
    const publisher = yield* makePublisher(nc, {
      timeout: resolved.publishTimeout,
      maxPending: resolved.maxPendingPublishes
    })
    let closed = false
    yield* Effect.addFinalizer(() => Effect.sync(() => (closed = true)))

    const closedError = (topic: string) =>
      new PublishError({ topic, reason: "Closed", retriable: false, message: `cannot publish to ${topic}: the NATS bus is closed` })

    const noJetStream = (topic: string) =>
      new PublishError({
        topic,
        reason: "NoStream",
        retriable: false,
        message: `cannot publish to ${topic}: it is persistent, and JetStream is not enabled on the server`
      })

    /** An ephemeral topic's publish: one core-NATS message, stored nowhere, answered at once. */
    const publishCore: TransportShape["publish"] = (message) =>
      Effect.suspend(() => {
        const headers = encodeHeaders(message.headers, message.eventId)
        const limit = nc.info?.max_payload
        // nats.js counts the headers against max_payload too (and throws an untyped error beyond it).
        const size = message.body.length + (headers instanceof EncodedHeaders ? headers.encode().length : 0)
        if (limit !== undefined && size > limit) {
          return Effect.fail(
            new PublishError({
              topic: message.topic,
              reason: "TooLarge",
              retriable: false,
              message: `cannot publish to ${message.topic}: the event is ${size} bytes with its headers, more than the server's max_payload (${limit})`
            })
          )
        }
        try {
          nc.publish(message.topic, message.body, { headers })
        } catch (cause) {
          return Effect.fail(toPublishError(cause, message.topic))
        }
        return Effect.succeed({ topic: message.topic, stream: "", sequence: 0, duplicate: false, ephemeral: true })
      })

    const publish: TransportShape["publish"] = (message) =>
      closed
        ? Effect.fail(closedError(message.topic))
        : topics.isEphemeral(message.topic)
        ? publishCore(message)
        : jetStream
        ? publisher.publish(message.topic, message.body, message.headers, message.eventId)
        : Effect.fail(noJetStream(message.topic))

    const acker = new Acker(nc)

    /** A pattern is never ephemeral: its subscription reads streams. */
    const isConcrete = (topic: string): boolean => checkTopic(topic, "subject") === undefined

    /** An ephemeral topic's subscription: a core-NATS (queue) subscription, at most once. */
    const consumeCore = (
      options: Parameters<TransportShape["consume"]>[0],
      process: Parameters<TransportShape["consume"]>[1]
    ): Effect.Effect<void, SubscribeError, Scope.Scope> =>
      Effect.gen(function*() {
        const { group, topic } = options
        const policy = options.deliverPolicy
        if ((policy !== "all" && policy !== "new") || options.replay === "original") {
          return yield* new SubscribeError({
            topic,
            group,
            reason: "InvalidOptions",
            message: `cannot subscribe to ${topic} with ${
              options.replay === "original" ? "replay \"original\"" : `deliverPolicy ${JSON.stringify(policy)}`
            }: the topic is ephemeral, so nothing is stored to start from`
          })
        }
        // Registered before the subscription starts, so its finalizer runs after the drain: a draining ephemeral
        // subscription still shows in `consumers` and `draining`, as a JetStream one does.
        let consumer: { readonly draining: () => boolean; readonly oldestRunningSince: () => number | undefined; readonly running: () => number; readonly buffered: () => number } | undefined
        const entry: LiveConsumer = {
          stream: "",
          topic,
          group,
          name: group ?? "(core)",
          draining: () => consumer?.draining() ?? false,
          oldestRunningSince: () => consumer?.oldestRunningSince(),
          core: { running: () => consumer?.running() ?? 0, buffered: () => consumer?.buffered() ?? 0 }
        }
        if (options.internal !== true) live.add(entry)
        yield* Effect.addFinalizer(() => Effect.sync(() => live.delete(entry)))
        consumer = yield* startCoreConsumer({
          nc,
          topic,
          group,
          maxInFlight: options.maxInFlight,
          drainTimeout: options.drainTimeout,
          process,
          deadLetters: new DeadLetterWriter({ publisher, acker, prefix: resolved.deadLetterPrefix, group })
        }).pipe(Effect.mapError((cause) => toSubscribeError(cause, topic, group)))
      })

    /** The live consumers, for the `consumers` and `draining` capabilities. */
    const live = new Set<LiveConsumer>()

    const consume: TransportShape["consume"] = (options, process) =>
      Effect.gen(function*() {
        const { group, topic } = options
        if (closed || nc.isClosed()) {
          return yield* new SubscribeError({
            topic,
            group,
            reason: "Closed",
            message: `cannot subscribe to ${topic}: the NATS bus is closed`
          })
        }
        if (isConcrete(topic) && topics.isEphemeral(topic)) return yield* consumeCore(options, process)
        if (!jetStream) {
          return yield* new SubscribeError({
            topic,
            group,
            reason: "Unsupported",
            message: `cannot subscribe to ${topic}: it is persistent (or a pattern, which reads streams), and JetStream is not enabled on the server`
          })
        }
        const stream = yield* routes.streamFor(topic, group)
        const name = group ?? `cqbus_${nuid.next()}`
        // Everything below runs with the settings in force on the server (issue 10, item 1): keep-alives from its
        // `ack_wait`, dead letters no later than its `max_deliver`.
        const { server, settings } = yield* setUpConsumer({
          nc,
          jsm,
          stream,
          name,
          strategy: resolved.provisioning,
          options
        })
        let draining = () => false
        let oldestRunningSince = (): number | undefined => undefined
        const entry: LiveConsumer = {
          stream,
          topic,
          group,
          name,
          draining: () => draining(),
          oldestRunningSince: () => oldestRunningSince()
        }
        // An infrastructure subscription (the heartbeat) is no backlog anyone should watch.
        if (options.internal !== true) live.add(entry)
        yield* Effect.addFinalizer(() => Effect.sync(() => live.delete(entry)))
        const consumer = yield* startPullConsumer({
          nc,
          stream,
          consumer: name,
          maxInFlight: options.maxInFlight,
          drainTimeout: options.drainTimeout,
          settings,
          process,
          acker,
          deadLetters: new DeadLetterWriter({ publisher, acker, prefix: resolved.deadLetterPrefix, group }),
          server,
          topic,
          group,
          ...(options.idleHeartbeat === undefined ? {} : { heartbeat: Duration.toMillis(options.idleHeartbeat) })
        }).pipe(Effect.mapError((cause) => toSubscribeError(cause, topic, group, stream)))
        draining = consumer.draining
        oldestRunningSince = consumer.oldestRunningSince
      })

    // The event streams of the configuration, the main one first: what `check` asks, and `streams`. Not the health
    // stream: its memory storage is gone after a server restart until the next start-up creates it again, and the
    // heartbeat that needs it is a check of its own.
    // A stream read under "skip" may be one this account may not even look at: asking it would fail every check.
    const checked = [stream, ...resolved.streams.filter((s) => (s.provisioning ?? resolved.provisioning) !== "skip").map((s) => s.name)]

    // Which step a timed-out check was at: a server that does not answer at all, or streams without a leader (only the
    // leader answers for a clustered stream, so during an election its info request goes unanswered).
    const check: TransportShape["check"] = Effect.suspend(() => {
      let step: "connection" | "streams" = "connection"
      const waiting = new Set<string>()
      return Effect.tryPromise({
        try: async () => {
          if (closed || nc.isClosed()) throw new HealthError({ component: "connection", message: "connection: closed" })
          await nc.flush().catch((cause) => {
            throw toHealthError("connection", cause)
          })
          // Without JetStream there is no stream to ask: the connection is all there is.
          if (!jetStream) return
          step = "streams"
          // In parallel: one slow stream must not use up the others' time; the first failure names its stream.
          await Promise.all(checked.map((name) => {
            waiting.add(name)
            return jsm.streams.info(name).then(
              () => void waiting.delete(name),
              (cause) => {
                throw toHealthError(`stream ${name}`, cause)
              }
            )
          }))
        },
        catch: (cause) => cause instanceof HealthError ? cause : toHealthError("transport", cause)
      }).pipe(
        Effect.timeoutOrElse({
          duration: Duration.millis(resolved.checkTimeout),
          orElse: () => {
            if (step === "connection") {
              return Effect.fail(
                new HealthError({
                  component: "connection",
                  message: `connection: NATS did not answer within ${resolved.checkTimeout} ms`
                })
              )
            }
            const silent = checked.filter((name) => waiting.has(name))
            const streams = silent.map((name) => `stream ${name}`).join(", ")
            return Effect.fail(
              new HealthError({
                component: streams,
                message: `${streams}: no answer within ${resolved.checkTimeout} ms; ${
                  silent.length === 1 ? "it has" : "they have"
                } no leader right now (a JetStream leader election, or too few servers up) or JetStream is not answering`
              })
            )
          }
        })
      )
    })

    // Without JetStream no dead letter can be stored (each is a warning line), so there are none to read.
    const deadLetters = jetStream ? readDeadLetters(jsm, js, resolved.deadLetterStream) : undefined
    const deadLetterStore = jetStream
      ? DeadLetterStore.make(jsm, resolved.deadLetterStream, resolved.deadLetterPrefix)
      : undefined

    const connection = { get: SubscriptionRef.get(state), changes: SubscriptionRef.changes(state), events: managed.events }

    // The pull loop stamps its deliveries with `Date.now()`, so the age is read on the same clock.
    const ageSince = (since: number | undefined): Duration.Duration =>
      since === undefined ? Duration.zero : Duration.millis(Math.max(0, Date.now() - since))

    /** A core subscription's backlog, from the process alone: the server keeps nothing for it. */
    const coreLag = (entry: LiveConsumer, core: NonNullable<LiveConsumer["core"]>): ConsumerLag => ({
      topic: entry.topic,
      group: entry.group,
      consumer: entry.name,
      pending: core.buffered(),
      ackPending: core.running(),
      redelivered: 0,
      draining: entry.draining(),
      oldestUnackedAge: ageSince(entry.oldestRunningSince())
    })

    // One consumer-info request per live subscription, in parallel, under the check timeout.
    const consumers: TransportShape["consumers"] = Effect.suspend(() =>
      Effect.forEach([...live], (entry) =>
        entry.core !== undefined
          ? Effect.succeed(coreLag(entry, entry.core))
          : Effect.tryPromise({
          try: () => jsm.consumers.info(entry.stream, entry.name),
          catch: (cause) => toHealthError(`consumer ${entry.name}`, cause)
        }).pipe(Effect.map((info): ConsumerLag => ({
          topic: entry.topic,
          group: entry.group,
          consumer: entry.name,
          pending: info.num_pending,
          ackPending: info.num_ack_pending,
          redelivered: info.num_redelivered,
          draining: entry.draining(),
          oldestUnackedAge: ageSince(entry.oldestRunningSince())
        }))), { concurrency: "unbounded" })
    ).pipe(
      Effect.timeoutOrElse({
        duration: Duration.millis(resolved.checkTimeout),
        orElse: () =>
          Effect.fail(
            new HealthError({ component: "consumers", message: `NATS did not answer within ${resolved.checkTimeout} ms` })
          )
      })
    )
    const draining: TransportShape["draining"] = Effect.sync(() =>
      closed || [...live].some((entry) => entry.group !== undefined && entry.draining())
    )

    /** Fetch batches: a pull request for the group's consumer, then each message answered with its outcome. */
    const fetch: NonNullable<TransportShape["fetch"]> = (request, process) =>
      Effect.gen(function*() {
        const { group, topic } = request
        const refuse = (reason: SubscribeError["reason"], why: string) =>
          new SubscribeError({ topic, group, reason, message: `cannot fetch ${topic}: ${why}` })
        if (closed || nc.isClosed()) return yield* refuse("Closed", "the NATS bus is closed")
        if (isConcrete(topic) && topics.isEphemeral(topic)) {
          return yield* refuse("Unsupported", "the topic is ephemeral, so nothing is stored to fetch")
        }
        const stream = yield* routes.streamFor(topic, group)
        yield* fetchBatch({
          nc,
          jsm,
          stream,
          strategy: resolved.provisioning,
          acker,
          deadLetters: new DeadLetterWriter({ publisher, acker, prefix: resolved.deadLetterPrefix, group })
        }, request, process)
      })

    const transport: TransportShape = {
      name: "nats",
      publish,
      consume,
      check,
      ...(deadLetters === undefined ? {} : { deadLetters }),
      connection,
      consumers,
      draining,
      publishing: Effect.sync(publisher.depth),
      topics: topics.registry,
      ...(deadLetterStore === undefined ? {} : { deadLetterStore }),
      // Without JetStream nothing is stored, so there is nothing to fetch.
      ...(jetStream ? { fetch } : {})
    }
    return {
      transport,
      nats: {
        connection: nc,
        stream,
        streams: checked,
        deadLetterStream: resolved.deadLetterStream,
        state
      },
      connection: managed
    }
  })

const NatsTransportKey: Context.ServiceClass<NatsTransport, "@cqbus/nats/NatsTransport", NatsTransportShape> = Context
  .Service<NatsTransport, NatsTransportShape>()("@cqbus/nats/NatsTransport")

/**
 * The NATS transport's own service: the connection, stream names and connection state. `NatsTransport.layer`
 * provides it together with the generic `Transport`.
 *
 * @since 0.1.0
 * @category services
 */
export class NatsTransport extends NatsTransportKey {}

/**
 * The transport as `Transport`, `NatsTransport` and `NatsConnection`; connects, provisions, and drains when the scope
 * closes. Fails with `NatsError` only.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  config: NatsEventBusConfig = {}
): Layer.Layer<Transport.Transport | NatsTransport | NatsConnection.NatsConnection, NatsError> =>
  Layer.effectContext(
    Effect.map(make(config), ({ connection, nats, transport }) =>
      Context.make(Transport.Transport, transport).pipe(
        Context.add(NatsTransport, nats),
        Context.add(NatsConnection.NatsConnection, connection)
      ))
  )
