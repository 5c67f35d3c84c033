/**
 * The typed event bus: publish protobuf events and subscribe handlers to them, over any `Transport`. It owns
 * everything that must be the same on every backend — encoding, the CloudEvents envelope, topic validation, decoding,
 * the decision of what a handler's result means for delivery, and per-key ordering — and leaves storage and
 * acknowledgement to the transport.
 *
 * @module
 */
import { create, type DescMessage, type MessageInitShape, type MessageShape, toBinary } from "@bufbuild/protobuf"
import { Context, Duration, Effect, Layer, Result, type Scope } from "effect"
import * as Backoff from "./Backoff.ts"
import { envelopeHeaders, newEventId } from "./Envelope.ts"
import { ConfigError, DecodeError, type HealthError, type InvalidTopic, PublishError, SubscribeError } from "./Errors.ts"
import type { EventDef } from "./EventDef.ts"
import type { Handler, Middleware, PublishMiddleware, Send } from "./Handler.ts"
import { checkEventBusConfig, checkPublishOptions, checkSubscribeOptions, WindowRange } from "./internal/checks.ts"
import { decodeEvent } from "./internal/decode.ts"
import { makeProcess } from "./internal/process.ts"
import * as MemoryTransport from "./MemoryTransport.ts"
import * as Options from "./Options.ts"
import { checkTopic } from "./Topic.ts"
import * as TopicConfig from "./TopicConfig.ts"
import {
  type ConsumeOptions,
  type DeliverPolicy,
  type Headers,
  type IncomingMessage,
  type PublishAck,
  Transport,
  type TransportShape
} from "./Transport.ts"

/**
 * Options of one publish.
 *
 * @since 0.1.0
 * @category models
 */
export interface PublishOptions {
  /** The event id (default: a random UUID). Publishing again with the same id inside the dedupe window is a no-op. */
  readonly eventId?: string
  /** The ordering key (default: from the event definition's `key`). */
  readonly key?: string
  /** Correlates this event with a request or a process (`ce-correlationid`). */
  readonly correlationId?: string
  /** Extra headers (`traceparent`, your own). The CloudEvents attributes win over a header of the same name. */
  readonly headers?: Headers
  /**
   * Marks an infrastructure publish (the health heartbeat's probes): the bus-wide `publishMiddleware` (publish logs,
   * metrics, tracing) is not applied to it, as `SubscribeOptions.internal` keeps the bus-wide middleware off the
   * probes' deliveries, so a probe every few seconds does not count as application traffic. Default `false`.
   */
  readonly internal?: boolean
}

/**
 * Options of one subscription. Defaults come from the bus config, then from the values listed here. A value outside
 * its range fails `subscribe` with `SubscribeError` reason `InvalidOptions` naming it (docs/reliability.md, "Options").
 *
 * @since 0.1.0
 * @category models
 */
export interface SubscribeOptions {
  /**
   * A durable group name. Subscriptions with the same group share the messages (each goes to one member) and the
   * group's position survives restarts; different groups each get every message. Without a group the subscription is
   * ephemeral: it starts with new messages and is forgotten when its scope closes.
   */
  readonly group?: string
  /** Handlers running at once (default 8; 1 to 10,000). */
  readonly concurrency?: number
  /** `"key"`: one event at a time per ordering key, in publish order; keys run concurrently (default `"none"`). */
  readonly ordering?: "none" | "key"
  /**
   * With `ordering: "key"`, how many deliveries may be held at once, running or waiting for their key (default
   * 16 × concurrency, at least `concurrency`). It bounds memory: when one key's backlog fills it, the subscription
   * stops pulling until that key moves.
   */
  readonly maxBuffered?: number
  /** Deliveries (first one included) before a failing message is dead-lettered (default 5; 1 to 10,000). */
  readonly maxDeliver?: number
  /** Delay before redelivering a failed message (default exponential from 200 ms, ×2, up to 1 minute). */
  readonly backoff?: Backoff.Backoff
  /**
   * Where a new group or an ephemeral subscription starts (default `"all"` for a group, `"new"` without one):
   * `"last"` is the latest retained event of the topic (or pattern), `"lastPerSubject"` the latest of each concrete
   * subject the pattern matches, each followed by new events.
   */
  readonly deliverPolicy?: DeliverPolicy
  /**
   * `"original"`: retained events are delivered at the rate they were stored until the subscription has caught up
   * (rate-limited replay); default `"instant"`.
   */
  readonly replay?: "instant" | "original"
  /**
   * The most events the group (all its members together) holds delivered and not yet settled (default
   * max(1000, 4 × concurrency) on NATS, unlimited in memory; 1 to 10,000,000).
   */
  readonly maxAckPending?: number
  /**
   * `"none"`: fire-and-forget reads. Nothing is acknowledged; every event is delivered once, whatever the handler does:
   * `RetryLater`, a failure, `Reject` and a hand-back at shutdown are only logged (one warning line), never redelivered
   * nor dead-lettered. Default `"explicit"` (docs/semantics.md, "Subscribe options").
   */
  readonly ackPolicy?: "explicit" | "none"
  /**
   * How often the broker tells an idle subscription it is still there (NATS: the pull request's heartbeat, default
   * 1 s; 100 ms to 1 minute). Ignored in memory.
   */
  readonly idleHeartbeat?: Duration.Input
  /**
   * Without a group only: how long the broker keeps the subscription's consumer after its process stopped pulling
   * (NATS `inactive_threshold`, default 1 minute; 1 second to 7 days). Ignored in memory.
   */
  readonly inactiveThreshold?: Duration.Input
  /** A description of the consumer on the broker (NATS `description`, up to 4096 characters). Ignored in memory. */
  readonly description?: string
  /**
   * Labels of the consumer on the broker (NATS `metadata`, nats-server 2.10 or later; an older server ignores them and a
   * warning says so). Ignored in memory.
   */
  readonly metadata?: Readonly<Record<string, string>>
  /** How long a delivery may stay unacknowledged before the backend redelivers it (default 30 s; 100 ms to 1 day). */
  readonly ackWait?: Duration.Input
  /** How long closing the subscription waits for running handlers before handing them back (default 10 s; 0 to 1 hour). */
  readonly drainTimeout?: Duration.Input
  /**
   * Marks an infrastructure subscription (the health heartbeat's): the bus-wide `middleware` (logging, metrics, ...)
   * is not applied to it, and transports leave it out of their `consumers` capability (backlog checks), so its
   * deliveries neither flood logs and counters nor show up as an anonymous consumer. Default `false`.
   */
  readonly internal?: boolean
}

/**
 * A live subscription.
 *
 * @since 0.1.0
 * @category models
 */
export interface Subscription {
  readonly topic: string
  readonly group: string | undefined
}

/**
 * Configuration of a bus.
 *
 * @since 0.1.0
 * @category models
 */
export interface EventBusConfig {
  /** The CloudEvents `source` of published events: this service's name (default `"cqbus"`). */
  readonly source?: string
  /** Defaults for every subscription of this bus. */
  readonly subscribe?: Omit<
    SubscribeOptions,
    "group" | "deliverPolicy" | "replay" | "ackPolicy" | "description" | "metadata"
  >
  /**
   * Middleware for every subscription of this bus, applied around the subscription's own handler (which may already
   * be wrapped with `pipe`). `[a, b]` means `pipe(handler, a, b)`: `a` wraps the handler, `b` wraps `a` and runs
   * outermost.
   */
  readonly middleware?: ReadonlyArray<Middleware<unknown>>
  /** Publish middleware for every publish of this bus; `[a, b]`: `b` runs outermost, `a` next to the transport. */
  readonly publishMiddleware?: ReadonlyArray<PublishMiddleware>
  /**
   * Log each failed delivery and each dead letter as one warning line through Effect's `Logger` (default true), with
   * the topic, group, event id, attempt, `maxDeliver` and the error's tag and message; a dead letter's line says why.
   * Success logs nothing. A delivery whose outcome a plugin reports (`logging()`, via `Verdict.markReported`) gets no
   * default line, so the same failure is never logged twice. `false` turns the default lines off.
   */
  readonly logFailures?: boolean
  /**
   * Topics configured when the bus starts, each with its persistence (or settings): applied through `bus.topics`, so
   * each name and setting is checked the same way; one the backend refuses fails start-up with `ConfigError` naming
   * it. Unlisted topics follow the backend's default persistence (`persistent` unless the backend is told otherwise).
   * `TopicConfig.parseList` reads the text form environment variables carry.
   */
  readonly topics?: Readonly<Record<string, TopicConfig.Persistence | TopicConfig.TopicSettings>>
}

/**
 * The operations of the bus.
 *
 * @since 0.1.0
 * @category models
 */
export interface EventBusShape {
  /** Encodes and publishes an event; succeeds when the backend has stored it. */
  readonly publish: <S extends DescMessage>(
    event: EventDef<S>,
    message: MessageInitShape<S>,
    options?: PublishOptions
  ) => Effect.Effect<PublishAck, PublishError | InvalidTopic>
  /**
   * Publishes many events with up to `window` (default 256) publishes awaiting their acknowledgement at once, and
   * returns one result per event, in input order: a failure of one event does not stop or hide the others.
   */
  readonly publishAll: <S extends DescMessage>(
    event: EventDef<S>,
    messages: Iterable<MessageInitShape<S>>,
    options?: { readonly window?: number; readonly publish?: (message: MessageInitShape<S>, index: number) => PublishOptions }
  ) => Effect.Effect<ReadonlyArray<Result.Result<PublishAck, PublishError | InvalidTopic>>>
  /**
   * Subscribes a handler. The subscription exists when the effect succeeds; it drains gracefully when the scope
   * closes (running handlers finish within `drainTimeout`, the rest is handed back).
   */
  readonly subscribe: <S extends DescMessage, E, R>(
    event: EventDef<S>,
    handler: Handler<MessageShape<S>, E, R>,
    options?: SubscribeOptions
  ) => Effect.Effect<Subscription, SubscribeError | InvalidTopic, Scope.Scope | R>
  /** Publishes bytes of any (or no) protobuf type on a concrete topic. */
  readonly publishRaw: (
    topic: string,
    body: Uint8Array,
    options?: PublishOptions & { readonly type?: string }
  ) => Effect.Effect<PublishAck, PublishError | InvalidTopic>
  /** Subscribes to the raw bytes of a topic or wildcard pattern (`cqc.events.v1.*`, `cqc.events.>`). */
  readonly subscribeRaw: <E, R>(
    topic: string,
    handler: Handler<Uint8Array, E, R>,
    options?: SubscribeOptions
  ) => Effect.Effect<Subscription, SubscribeError | InvalidTopic, Scope.Scope | R>
  /** Succeeds while the bus can publish and deliver. */
  readonly check: Effect.Effect<void, HealthError>
  /**
   * Per-topic persistence at run time: configure, get, list, remove (`TopicConfig`). A change applies to later
   * publishes and subscriptions.
   */
  readonly topics: TopicConfig.Topics
}

const DEFAULTS = {
  concurrency: 8,
  maxDeliver: 5,
  backoff: Backoff.exponential(),
  ackWait: Duration.seconds(30),
  drainTimeout: Duration.seconds(10)
} as const

const invalidPublish = (topic: string, found: Options.Problem): PublishError =>
  new PublishError({ topic, reason: "InvalidOptions", retriable: false, message: `cannot publish to ${topic}: ${found.message}` })

/**
 * Builds a bus over the `Transport` in context and applies `config.topics`. Fails with `ConfigError` when an option of
 * `config` is out of range or the backend refuses a configured topic.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (config: EventBusConfig = {}): Effect.Effect<EventBusShape, ConfigError, Transport> =>
  Effect.suspend(() => {
    const found = checkEventBusConfig(config)
    return found === undefined ? Effect.void : Effect.fail(Options.toConfigError(found))
  }).pipe(
    Effect.andThen(Effect.service(Transport)),
    Effect.map(build(config)),
    Effect.tap((bus) =>
      Effect.forEach(Object.entries(config.topics ?? {}), ([topic, settings]) =>
        Effect.mapError(bus.topics.configure(topic, settings), (error) =>
          new ConfigError({ option: `topics.${topic}`, message: error.message })), { discard: true })
    )
  )

/** The bus over a transport (`config` already checked). */
const build = (config: EventBusConfig) => (transport: TransportShape): EventBusShape => {
    const source = config.source ?? "cqbus"
    const shared = config.subscribe ?? {}
    const checked = new WeakSet<EventDef<DescMessage>>()
    const transmit: Send = (config.publishMiddleware ?? []).reduce<Send>((next, m) => m(next), transport.publish)
    const wrap = <A, E, R>(handler: Handler<A, E, R>): Handler<A, unknown, R> =>
      (config.middleware ?? []).reduce<Handler<A, unknown, R>>((inner, m) => m(inner), handler)

    const send = (
      topic: string,
      body: Uint8Array,
      type: string | undefined,
      key: string | undefined,
      options: PublishOptions | undefined
    ): Effect.Effect<PublishAck, PublishError | InvalidTopic> =>
      Effect.clockWith((clock) => {
        const given = options?.eventId
        const eventId = given ?? newEventId()
        const headers = envelopeHeaders({
          id: eventId,
          type,
          source,
          time: new Date(clock.currentTimeMillisUnsafe()),
          key,
          correlationId: options?.correlationId,
          headers: options?.headers
        })
        const message = { topic, body, headers, eventId, dedupe: given !== undefined, key }
        return options?.internal === true ? transport.publish(message) : transmit(message)
      })

    const publish = <S extends DescMessage>(
      event: EventDef<S>,
      message: MessageInitShape<S>,
      options?: PublishOptions
    ): Effect.Effect<PublishAck, PublishError | InvalidTopic> =>
      Effect.suspend(() => {
        const invalidOptions = options === undefined ? undefined : checkPublishOptions(options)
        if (invalidOptions !== undefined) return Effect.fail(invalidPublish(event.topic, invalidOptions))
        let full: MessageShape<S>
        let body: Uint8Array
        try {
          full = create(event.schema, message)
          body = toBinary(event.schema, full)
        } catch (cause) {
          return Effect.fail(
            new PublishError({
              topic: event.topic,
              reason: "Encode",
              retriable: false,
              message: `cannot encode ${event.type} for ${event.topic}: ${cause instanceof Error ? cause.message : String(cause)}`,
              cause
            })
          )
        }
        if (!checked.has(event)) {
          // `defineEvent` validates its topic, but an `EventDef` is a plain interface and may be built by hand.
          const invalid = checkTopic(event.topic, "subject")
          if (invalid !== undefined) return Effect.fail(invalid)
          checked.add(event)
        }
        const key = options?.key ?? event.key?.(full)
        if (key === "" && event.key !== undefined) {
          // An unset proto3 string is "": every such event would share one key and be serialized behind each other.
          if (event.allowEmptyKey === true) return send(event.topic, body, event.type, undefined, options)
          return Effect.fail(
            new PublishError({
              topic: event.topic,
              reason: "MissingKey",
              retriable: false,
              message: `cannot publish ${event.type} to ${event.topic}: its ordering key ${
                event.keyField === undefined ? "" : `(field ${event.keyField}) `
              }is empty; set it, or define the event with allowEmptyKey: true to publish such events without a key`
            })
          )
        }
        return send(event.topic, body, event.type, key, options)
      })

    const publishRaw = (
      topic: string,
      body: Uint8Array,
      options?: PublishOptions & { readonly type?: string }
    ): Effect.Effect<PublishAck, PublishError | InvalidTopic> =>
      Effect.suspend(() => {
        const invalid = checkTopic(topic, "subject")
        if (invalid !== undefined) return Effect.fail(invalid)
        const invalidOptions = options === undefined ? undefined : checkPublishOptions(options)
        if (invalidOptions !== undefined) return Effect.fail(invalidPublish(topic, invalidOptions))
        return send(topic, body, options?.type, options?.key, options)
      })

    const start = <A, E, R>(
      topic: string,
      decode: (message: IncomingMessage, topic: string) => A | DecodeError,
      keyOf: ((event: A) => string) | undefined,
      handler: Handler<A, E, R>,
      options: SubscribeOptions = {}
    ): Effect.Effect<Subscription, SubscribeError | InvalidTopic, Scope.Scope | R> =>
      Effect.gen(function*() {
        const invalid = checkTopic(topic, "pattern")
        if (invalid !== undefined) return yield* invalid
        const problem = checkSubscribeOptions(options)
        if (problem !== undefined) {
          const group = typeof options?.group === "string" ? options.group : undefined
          return yield* new SubscribeError({
            topic,
            group,
            reason: "InvalidOptions",
            message: `cannot subscribe to ${topic}: ${problem.message}`
          })
        }
        const group = options.group
        const concurrency = options.concurrency ?? shared.concurrency ?? DEFAULTS.concurrency
        const maxDeliver = options.maxDeliver ?? shared.maxDeliver ?? DEFAULTS.maxDeliver
        const ordering = options.ordering ?? shared.ordering ?? "none"
        // The default grows with `concurrency` but stays inside the accepted range.
        const maxBuffered = options.maxBuffered ?? shared.maxBuffered ?? Math.min(concurrency * 16, 1_000_000)
        const context = yield* Effect.context<R>()
        // Infrastructure subscriptions run their handler bare: bus-wide middleware is for the application's events.
        const wrapped = options.internal === true ? handler : wrap(handler)
        const process = makeProcess<A, unknown>({
          topic,
          group,
          decode,
          keyOf,
          // Deliveries usually run in a fiber forked from this one, with this very context: providing it again would
          // copy the whole service map per delivery.
          handler: (event, delivery) =>
            Effect.withFiber((fiber) =>
              fiber.context === context
                ? wrapped(event, delivery) as Effect.Effect<void, unknown>
                : Effect.provideContext(wrapped(event, delivery), context)
            ),
          maxDeliver,
          backoff: options.backoff ?? shared.backoff ?? DEFAULTS.backoff,
          ordering,
          concurrency,
          // An internal subscription (the heartbeat) has its own failure handling; its probes are no user's failures.
          logFailures: options.internal !== true && (config.logFailures ?? true)
        })
        yield* transport.consume({
          topic,
          group,
          deliverPolicy: options.deliverPolicy ?? (group === undefined ? "new" : "all"),
          maxInFlight: ordering === "key" ? Math.max(concurrency, maxBuffered) : concurrency,
          ackWait: Duration.fromInputUnsafe(options.ackWait ?? shared.ackWait ?? DEFAULTS.ackWait),
          drainTimeout: Duration.fromInputUnsafe(options.drainTimeout ?? shared.drainTimeout ?? DEFAULTS.drainTimeout),
          ...(options.internal === true ? { internal: true } : {}),
          ...consumerOptions(options, shared, group)
        }, process)
        return { topic, group }
      })

    const subscribe = <S extends DescMessage, E, R>(
      event: EventDef<S>,
      handler: Handler<MessageShape<S>, E, R>,
      options?: SubscribeOptions
    ): Effect.Effect<Subscription, SubscribeError | InvalidTopic, Scope.Scope | R> =>
      start(event.topic, (message, topic) => decodeEvent(event, message, topic), event.key, handler, options)

    const subscribeRaw = <E, R>(
      topic: string,
      handler: Handler<Uint8Array, E, R>,
      options?: SubscribeOptions
    ): Effect.Effect<Subscription, SubscribeError | InvalidTopic, Scope.Scope | R> =>
      start(topic, (message) => message.body, undefined, handler, options)

    const publishAll = <S extends DescMessage>(
      event: EventDef<S>,
      messages: Iterable<MessageInitShape<S>>,
      options?: { readonly window?: number; readonly publish?: (message: MessageInitShape<S>, index: number) => PublishOptions }
    ): Effect.Effect<ReadonlyArray<Result.Result<PublishAck, PublishError | InvalidTopic>>> =>
      Effect.suspend(() => {
        // `window` workers that each take the next message when their publish is acknowledged: one fiber per slot of
        // the window rather than one per message.
        const items = Array.from(messages)
        const results = new Array<Result.Result<PublishAck, PublishError | InvalidTopic>>(items.length)
        let next = 0
        const worker = (): Effect.Effect<void> => {
          const index = next++
          if (index >= items.length) return Effect.void
          const message = items[index]!
          return Effect.flatMap(Effect.result(publish(event, message, options?.publish?.(message, index))), (result) => {
            results[index] = result
            return worker()
          })
        }
        const window = options?.window
        const invalidWindow = Options.first(
          () => Options.integer("window", window, WindowRange),
          () => Options.func("publish", options?.publish)
        )
        if (invalidWindow !== undefined) {
          const failure = Result.fail(invalidPublish(event.topic, invalidWindow))
          return Effect.succeed(items.map(() => failure))
        }
        const workers = Math.min(items.length, window ?? 256)
        return Effect.as(
          Effect.all(Array.from({ length: workers }, () => Effect.suspend(worker)), { concurrency: "unbounded", discard: true }),
          results as ReadonlyArray<Result.Result<PublishAck, PublishError | InvalidTopic>>
        )
      })

    return {
      publish,
      publishAll,
      subscribe,
      publishRaw,
      subscribeRaw,
      check: transport.check,
      topics: TopicConfig.topics(transport.topics, transport.name)
    }
  }

/**
 * The optional consumer settings of `ConsumeOptions`, only those given: a transport applies its own default for an
 * absent one, so a subscription that sets none asks the backend for exactly what it asked before these options existed.
 */
const consumerOptions = (
  options: SubscribeOptions,
  shared: NonNullable<EventBusConfig["subscribe"]>,
  group: string | undefined
): Partial<ConsumeOptions> => {
  const result: {
    -readonly [K in keyof ConsumeOptions]?: ConsumeOptions[K]
  } = {}
  if (options.replay !== undefined) result.replay = options.replay
  if (options.ackPolicy !== undefined) result.ackPolicy = options.ackPolicy
  if (options.description !== undefined) result.description = options.description
  if (options.metadata !== undefined) result.metadata = options.metadata
  const maxAckPending = options.maxAckPending ?? shared.maxAckPending
  if (maxAckPending !== undefined) result.maxAckPending = maxAckPending
  const idleHeartbeat = options.idleHeartbeat ?? shared.idleHeartbeat
  if (idleHeartbeat !== undefined) result.idleHeartbeat = Duration.fromInputUnsafe(idleHeartbeat)
  // A bus-wide default applies to the subscriptions it can apply to: those without a group.
  const inactiveThreshold = options.inactiveThreshold ?? shared.inactiveThreshold
  if (inactiveThreshold !== undefined && group === undefined) {
    result.inactiveThreshold = Duration.fromInputUnsafe(inactiveThreshold)
  }
  return result
}

const EventBusKey: Context.ServiceClass<EventBus, "@cqbus/core/EventBus", EventBusShape> = Context.Service<
  EventBus,
  EventBusShape
>()("@cqbus/core/EventBus")

/**
 * The event bus service. Get it with `yield* EventBus.EventBus`; provide it with `EventBus.layer` over a transport
 * layer, or `EventBus.layerMemory()` for the embedded in-memory backend.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { defineEvent, EventBus } from "@cqbus/core"
 * import { AssetCreatedSchema } from "@cqbus/testkit/events"
 *
 * const AssetCreated = defineEvent(AssetCreatedSchema)
 * const program = Effect.gen(function*() {
 *   const bus = yield* EventBus.EventBus
 *   yield* bus.subscribe(AssetCreated, (event) => Effect.log(`created ${event.assetId}`), { group: "audit" })
 *   yield* bus.publish(AssetCreated, { assetId: "a-1", symbol: "ACME" })
 * })
 * Effect.runPromise(program.pipe(Effect.scoped, Effect.provide(EventBus.layerMemory())))
 * ```
 *
 * @since 0.1.0
 * @category services
 */
export class EventBus extends EventBusKey {}

/**
 * The bus over the `Transport` in context. Fails with `ConfigError` when an option of `config` is out of range.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (config: EventBusConfig = {}): Layer.Layer<EventBus, ConfigError, Transport> =>
  Layer.effect(EventBus, make(config))

/**
 * The bus over a fresh in-memory transport; also provides `Transport` and `MemoryTransport` (dead letters,
 * retained messages) for tests and tools. Fails with `ConfigError` when a bus or memory option is out of range.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerMemory = (
  options: EventBusConfig & { readonly memory?: MemoryTransport.MemoryTransportOptions } = {}
): Layer.Layer<EventBus | Transport | MemoryTransport.MemoryTransport, ConfigError> =>
  layer(options).pipe(Layer.provideMerge(MemoryTransport.layer(options.memory)))
