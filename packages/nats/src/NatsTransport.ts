/**
 * The NATS JetStream backend of the `Transport` port: publishes wait for JetStream's PubAck (the event id rides in
 * `Nats-Msg-Id` for dedupe), subscriptions are durable pull consumers with a bounded consume loop, outcomes map to
 * ack / nak-with-delay / dead-letter stream + term, and closing a subscription drains it (DESIGN §4). Every nats.js
 * error is converted once, in `internal/errors.ts`.
 *
 * @module
 */
import {
  type ConsumeOptions,
  type ConsumerLag,
  type DeadLetter,
  type Headers,
  HealthError,
  type Outcome,
  PublishError,
  redactSecrets as redact,
  SubscribeError,
  Transport,
  type TransportShape
} from "@cqbus/core"
import {
  AckPolicy,
  type ConsumerConfig,
  DeliverPolicy,
  jetstream,
  type JetStreamClient,
  type JetStreamManager,
  jetstreamManager
} from "@nats-io/jetstream"
import { type Msg, nanos, type NatsConnection as NatsClient, nuid } from "@nats-io/nats-core"
import { Context, Duration, Effect, Layer, type Scope, SubscriptionRef } from "effect"
import { type Delivery, startPullConsumer } from "./internal/consumer.ts"
import { ApiCodes, isNotFound, toHealthError, toSubscribeError } from "./internal/errors.ts"
import { ensureConsumer } from "./internal/group.ts"
import { deadLetterBlock, headerSourceOf } from "./internal/headers.ts"
import { checkConfig, configError } from "./internal/options.ts"
import { provisionStream, streamConfig } from "./internal/provision.ts"
import { make as makePublisher } from "./internal/publisher.ts"
import type { NatsEventBusConfig } from "./NatsConfig.ts"
import { resolveConfig } from "./NatsConfig.ts"
import { acquire, type ConnectionState, type ManagedConnection, NatsConnection } from "./NatsConnection.ts"
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
  /** The stream events are stored in. */
  readonly stream: string
  /** The stream dead letters go to. */
  readonly deadLetterStream: string
  /** The connection state as it changes. */
  readonly state: SubscriptionRef.SubscriptionRef<ConnectionState>
}

/** Header names of a dead-letter record (besides the original headers). */
export const DeadLetterHeaders: {
  readonly reason: "cqbus-dlq-reason"
  readonly error: "cqbus-dlq-error"
  readonly deliveries: "cqbus-dlq-deliveries"
  readonly subject: "cqbus-dlq-subject"
  readonly stream: "cqbus-dlq-stream"
  readonly sequence: "cqbus-dlq-sequence"
  readonly group: "cqbus-dlq-group"
  readonly time: "cqbus-dlq-time"
  /**
   * Present when the record was too large with the original's bytes in it (over the server's max_payload): it says
   * what was left out, and the record has no body; the original stays in its stream at `cqbus-dlq-sequence`.
   */
  readonly omitted: "cqbus-dlq-omitted"
} = {
  reason: "cqbus-dlq-reason",
  error: "cqbus-dlq-error",
  deliveries: "cqbus-dlq-deliveries",
  subject: "cqbus-dlq-subject",
  stream: "cqbus-dlq-stream",
  sequence: "cqbus-dlq-sequence",
  group: "cqbus-dlq-group",
  time: "cqbus-dlq-time",
  omitted: "cqbus-dlq-omitted"
}

/** A subscription's consumer, as the capabilities report it. */
interface LiveConsumer {
  readonly topic: string
  readonly group: string | undefined
  readonly name: string
  readonly draining: () => boolean
}

/** Header values cannot carry line breaks. */
const oneLine = (text: string): string => text.replace(/[\r\n]+/g, " ")

const deliverPolicyConfig = (policy: ConsumeOptions["deliverPolicy"]): Partial<ConsumerConfig> =>
  policy === "all"
    ? { deliver_policy: DeliverPolicy.All }
    : policy === "new"
    ? { deliver_policy: DeliverPolicy.New }
    : "fromSequence" in policy
    ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: policy.fromSequence }
    : { deliver_policy: DeliverPolicy.StartTime, opt_start_time: policy.fromTime.toISOString() }

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
  { readonly transport: TransportShape; readonly nats: NatsTransportShape; readonly connection: ManagedConnection },
  NatsError,
  Scope.Scope
> =>
  Effect.gen(function*() {
    // Before anything connects: a bad option must not reach the server (or silently become a default).
    const invalid = checkConfig(config)
    if (invalid !== undefined) return yield* configError(invalid)
    const resolved = resolveConfig(config)
    const managed = yield* acquire(config, "nats://127.0.0.1:4222")
    const { nc, state } = managed
    const js: JetStreamClient = jetstream(nc)
    const jsm: JetStreamManager = yield* Effect.tryPromise({
      // `jetstreamManager` asks the server for the account info ($JS.API.INFO) unless told not to; "skip" promises no
      // management call at start-up (accounts may not be allowed any), so it must not probe either.
      try: () => jetstreamManager(nc, { checkAPI: resolved.provisioning !== "skip" }),
      catch: (cause) =>
        new NatsError({
          reason: "JetStreamUnavailable",
          message: `JetStream is not available on this connection (is the server started with JetStream, and is it enabled for the account?): ${
            redact(cause instanceof Error ? cause.message : String(cause))
          }`
        })
    })
    const stream = resolved.stream.name
    yield* provisionStream(jsm, streamConfig(resolved.stream), resolved.provisioning)
    if (resolved.provisioning !== "skip") {
      yield* provisionStream(
        jsm,
        streamConfig({
          name: resolved.deadLetterStream,
          subjects: [`${resolved.deadLetterPrefix}.>`],
          ...(resolved.deadLetterMaxAge === undefined ? {} : { maxAge: resolved.deadLetterMaxAge }),
          ...(resolved.deadLetterReplicas === undefined ? {} : { replicas: resolved.deadLetterReplicas }),
          ...(resolved.deadLetterStorage === undefined ? {} : { storage: resolved.deadLetterStorage })
        }),
        resolved.provisioning === "validateOnly" ? "validateOnly" : "createOnly"
      )
    }
    if (resolved.provisioning === "createOrUpdate" || resolved.provisioning === "createOnly") {
      // Probes are worth something for seconds: memory storage, a short age and a small cap keep them cheap.
      yield* provisionStream(
        jsm,
        streamConfig({
          name: resolved.healthStream,
          subjects: [`${resolved.healthPrefix}.>`],
          storage: "memory",
          maxAge: "1 minute",
          maxMessages: 10_000,
          discard: "old",
          // As safe as the events on a cluster: a heartbeat that fails whenever one node is away would be a false alarm.
          ...(resolved.stream.replicas === undefined ? {} : { replicas: resolved.stream.replicas })
        }),
        "createOnly"
      )
    }
    /** The stream a subscription's consumer lives on: the health stream for the heartbeat's subjects, else the events'. */
    const streamOf = (topic: string): string =>
      topic === resolved.healthPrefix || topic.startsWith(`${resolved.healthPrefix}.`) ? resolved.healthStream : stream
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

    const publish: TransportShape["publish"] = (message) =>
      closed
        ? Effect.fail(closedError(message.topic))
        : publisher.publish(message.topic, message.body, message.headers, message.eventId)

    const deadLetter = (delivery: Delivery, outcome: Extract<Outcome, { _tag: "DeadLetter" }>, group: string | undefined) =>
      Effect.suspend(() => {
        // The id gives one record per message and group, even when a retried dead-lettering publishes twice.
        const own: Array<readonly [string, string]> = [
          ["Nats-Msg-Id", `dlq:${delivery.stream}:${delivery.sequence}:${group ?? delivery.consumer}`],
          [DeadLetterHeaders.reason, oneLine(outcome.reason)],
          [DeadLetterHeaders.error, oneLine(outcome.errorTag)],
          [DeadLetterHeaders.deliveries, String(Math.max(outcome.attempts, delivery.deliveryCount))],
          [DeadLetterHeaders.subject, delivery.subject],
          [DeadLetterHeaders.stream, delivery.stream],
          [DeadLetterHeaders.sequence, String(delivery.sequence)]
        ]
        if (group !== undefined) own.push([DeadLetterHeaders.group, group])
        own.push([DeadLetterHeaders.time, new Date().toISOString()])
        const subject = `${resolved.deadLetterPrefix}.${delivery.subject}`
        // Through the publish engine, as events are; the original header lines are copied as bytes, never decoded
        // and re-encoded (nats.js refuses values with a bare CR or LF, and a refusal here looped forever).
        const raw = delivery.rawHeaders
        return publisher.publishBlock(subject, delivery.body, deadLetterBlock(raw, own)).pipe(
          // The record is larger than the original; one that no longer fits the server's max_payload is stored
          // without the original's bytes, which stay in the event stream at the sequence the record names.
          Effect.catchIf((error) => error.reason === "TooLarge", () =>
            publisher.publishBlock(
              subject,
              new Uint8Array(0),
              deadLetterBlock(undefined, [
                ...own,
                [DeadLetterHeaders.omitted, `${raw?.length ?? 0} header bytes, ${delivery.body.length} body bytes`]
              ])
            ))
        )
      })

    /** Stores a dead letter, then terminates the message; one that cannot be stored is naked instead, never lost. */
    const settleDeadLetter = (
      delivery: Delivery,
      outcome: Extract<Outcome, { _tag: "DeadLetter" }>,
      group: string | undefined
    ): Effect.Effect<void> =>
      deadLetter(delivery, outcome, group).pipe(
        // A bare `+TERM`: nats-server 2.9 ignores `+TERM <reason>` (2.10+ accepts it), and the message then came back
        // after every ackWait, forever; the reason is in the dead-letter record anyway.
        Effect.andThen(Effect.sync(() => respond(delivery.reply, "+TERM"))),
        Effect.catchCause((cause) =>
          Effect.andThen(
            Effect.logWarning(
              `cqbus: cannot store a dead letter for ${delivery.subject} #${delivery.sequence}; redelivering it`,
              cause
            ),
            Effect.sync(() => respond(delivery.reply, `-NAK {"delay":${nanos(1000)}}`))
          )
        )
      )
    const respond = (reply: string, body: string) => {
      if (!nc.isClosed()) nc.publish(reply, body)
    }

    /** The live consumers, for the `consumers` and `draining` capabilities. */
    const live = new Set<LiveConsumer>()

    const consume: TransportShape["consume"] = (options, process) =>
      Effect.gen(function*() {
        const { group, topic } = options
        const stream = streamOf(topic)
        if (closed || nc.isClosed()) {
          return yield* new SubscribeError({
            topic,
            group,
            reason: "Closed",
            message: `cannot subscribe to ${topic}: the NATS bus is closed`
          })
        }
        const name = group ?? `cqbus_${nuid.next()}`
        const ackWait = Duration.toMillis(options.ackWait)
        const base: Partial<ConsumerConfig> = {
          ack_policy: AckPolicy.Explicit,
          filter_subject: topic,
          ack_wait: nanos(ackWait),
          // The bus dead-letters after `maxDeliver` itself, with the reason; the server must never give up silently.
          max_deliver: -1,
          max_ack_pending: Math.max(1000, options.maxInFlight * 4),
          ...(group === undefined ? { name, inactive_threshold: nanos(60_000) } : { durable_name: name })
        }
        /** The consumer on the server, created from `start` when it does not exist, reconciled when it does. */
        const ensure = (start: Partial<ConsumerConfig>, recreating = false) =>
          ensureConsumer(jsm, {
            stream,
            name,
            topic,
            group,
            want: { ...base, ...start },
            strategy: resolved.provisioning,
            recreating
          })
        // Everything below runs with the settings in force on the server (issue 10, item 1): keep-alives from its
        // `ack_wait`, dead letters no later than its `max_deliver`.
        const settings = yield* ensure(deliverPolicyConfig(options.deliverPolicy))
        let draining = () => false
        const entry: LiveConsumer = { topic, group, name, draining: () => draining() }
        // An infrastructure subscription (the heartbeat) is no backlog anyone should watch.
        if (options.internal !== true) live.add(entry)
        // Registered before the consumer, so it runs after the consumer's drain: an ephemeral consumer is deleted only
        // once its deliveries are settled.
        yield* Effect.addFinalizer(() =>
          Effect.sync(() => live.delete(entry)).pipe(
            Effect.andThen(
              group === undefined && !nc.isClosed()
                ? Effect.promise(() => jsm.consumers.delete(stream, name).catch(() => false))
                : Effect.void
            )
          )
        )
        const consumer = yield* startPullConsumer({
          nc,
          stream,
          consumer: name,
          maxInFlight: options.maxInFlight,
          ackWait: settings.ackWait,
          maxDeliver: settings.maxDeliver,
          drainTimeout: options.drainTimeout,
          process,
          deadLetter: (delivery, outcome) => settleDeadLetter(delivery, outcome, group),
          // When the server loses the consumer (deleted, or gone after a restart with memory storage), create it again
          // from the oldest delivery not yet settled, so nothing is skipped.
          recreate: (floor) =>
            ensure(
              floor === undefined
                ? deliverPolicyConfig(options.deliverPolicy)
                : { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: floor },
              true
            ),
          missing: Effect.promise(() =>
            jsm.consumers.info(stream, name).then(() => false, (cause) => isNotFound(cause, ApiCodes.ConsumerNotFound))
          ),
          ackFloor: Effect.promise(() =>
            jsm.consumers.info(stream, name).then((info) => info.ack_floor.stream_seq, () => undefined)
          ),
          // A group created elsewhere (a Go service sharing it) may limit pulls; asking for more is refused (409).
          maxBatch: settings.config.max_batch !== undefined && settings.config.max_batch > 0
            ? settings.config.max_batch
            : undefined,
          maxExpires: settings.config.max_expires !== undefined && settings.config.max_expires > 0
            ? Math.floor(settings.config.max_expires / 1_000_000)
            : undefined
        }).pipe(Effect.mapError((cause) => toSubscribeError(cause, topic, group, stream)))
        draining = consumer.draining
      })

    // Which step a timed-out check was at: a server that does not answer at all, or a stream without a leader (only
    // the leader answers for a clustered stream, so during an election its info request goes unanswered).
    const check: TransportShape["check"] = Effect.suspend(() => {
      let step: "connection" | "stream" = "connection"
      return Effect.tryPromise({
        try: async () => {
          if (closed || nc.isClosed()) throw new HealthError({ component: "connection", message: "connection: closed" })
          await nc.flush().catch((cause) => {
            throw toHealthError("connection", cause)
          })
          step = "stream"
          await jsm.streams.info(stream).catch((cause) => {
            throw toHealthError(`stream ${stream}`, cause)
          })
        },
        catch: (cause) => cause instanceof HealthError ? cause : toHealthError("transport", cause)
      }).pipe(
        Effect.timeoutOrElse({
          duration: Duration.millis(resolved.checkTimeout),
          orElse: () =>
            Effect.fail(
              step === "connection"
                ? new HealthError({
                  component: "connection",
                  message: `connection: NATS did not answer within ${resolved.checkTimeout} ms`
                })
                : new HealthError({
                  component: `stream ${stream}`,
                  message: `stream ${stream}: no answer within ${resolved.checkTimeout} ms; it has no leader right now (a JetStream leader election, or too few servers up) or JetStream is not answering`
                })
            )
        })
      )
    })

    const deadLetters: Effect.Effect<ReadonlyArray<DeadLetter>> = Effect.promise(async () => {
      const info = await jsm.streams.info(resolved.deadLetterStream)
      const total = info.state.messages
      if (total === 0) return []
      const reader = await js.consumers.get(resolved.deadLetterStream)
      const batch = await reader.fetch({ max_messages: total, expires: 2000 })
      const letters: Array<DeadLetter> = []
      for await (const msg of batch) {
        // The original lines of a record are copied byte for byte, so nats.js's decoder may refuse them.
        const all = headerSourceOf(msg as unknown as Msg).headers
        const original: Record<string, string> = {}
        for (const name in all) if (!name.startsWith("cqbus-dlq-")) original[name] = all[name]!
        const group = all[DeadLetterHeaders.group]
        letters.push({
          subject: all[DeadLetterHeaders.subject] ?? msg.subject,
          body: msg.data,
          headers: original as Headers,
          reason: all[DeadLetterHeaders.reason] ?? "",
          errorTag: all[DeadLetterHeaders.error] ?? "",
          deliveryCount: Number(all[DeadLetterHeaders.deliveries] ?? 1),
          sequence: all[DeadLetterHeaders.sequence] === undefined ? undefined : Number(all[DeadLetterHeaders.sequence]),
          group,
          deadLetteredAt: new Date(all[DeadLetterHeaders.time] ?? msg.time)
        })
        if (letters.length >= total) break
      }
      return letters
    })

    const connection = { get: SubscriptionRef.get(state), changes: SubscriptionRef.changes(state) }

    // One consumer-info request per live subscription, in parallel, under the check timeout.
    const consumers: TransportShape["consumers"] = Effect.suspend(() =>
      Effect.forEach([...live], (entry) =>
        Effect.tryPromise({
          try: () => jsm.consumers.info(stream, entry.name),
          catch: (cause) => toHealthError(`consumer ${entry.name}`, cause)
        }).pipe(Effect.map((info): ConsumerLag => ({
          topic: entry.topic,
          group: entry.group,
          consumer: entry.name,
          pending: info.num_pending,
          ackPending: info.num_ack_pending,
          redelivered: info.num_redelivered,
          draining: entry.draining()
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

    const transport: TransportShape = {
      name: "nats",
      publish,
      consume,
      check,
      deadLetters,
      connection,
      consumers,
      draining
    }
    return {
      transport,
      nats: { connection: nc, stream, deadLetterStream: resolved.deadLetterStream, state },
      connection: managed
    }
  })

// An explicitly typed base instead of `class extends Context.Service<...>()(...)` (JSR, DESIGN §6).
const NatsTransportKey: Context.ServiceClass<NatsTransport, "@cqbus/nats/NatsTransport", NatsTransportShape> = Context
  .Service<NatsTransport, NatsTransportShape>()("@cqbus/nats/NatsTransport")

/**
 * The NATS transport's own service: the connection, stream names and connection state. `NatsTransport.layer`
 * provides it together with the generic `Transport`.
 *
 * @since 0.1.0
 * @category services
 */
export class NatsTransport extends NatsTransportKey {
  /**
   * The transport as `Transport`, `NatsTransport` and `NatsConnection`; connects, provisions, and drains when the
   * scope closes. Fails with `NatsError` only.
   *
   * @since 0.1.0
   * @category layers
   */
  static layer(config: NatsEventBusConfig = {}): Layer.Layer<Transport | NatsTransport | NatsConnection, NatsError> {
    return Layer.effectContext(
      Effect.map(make(config), ({ connection, nats, transport }) =>
        Context.make(Transport, transport).pipe(Context.add(NatsTransport, nats), Context.add(NatsConnection, connection)))
    )
  }
}
