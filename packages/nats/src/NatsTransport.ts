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
  type DeadLetter,
  type Headers,
  HealthError,
  type IncomingMessage,
  type Outcome,
  PublishError,
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
  jetstreamManager,
  type JsMsg
} from "@nats-io/jetstream"
import { headers as natsHeaders, nanos, type NatsConnection, nuid } from "@nats-io/nats-core"
import { Context, Duration, Effect, Fiber, FiberSet, Layer, Schedule, type Scope, Semaphore, SubscriptionRef } from "effect"
import { ApiCodes, isNotFound, toHealthError, toPublishError, toSubscribeError } from "./internal/errors.ts"
import { fromMsgHdrs, toMsgHdrs } from "./internal/headers.ts"
import { provisionStream, streamConfig } from "./internal/provision.ts"
import type { NatsEventBusConfig } from "./NatsConfig.ts"
import { resolveConfig } from "./NatsConfig.ts"
import { acquire, type ConnectionState, redact } from "./NatsConnection.ts"

/**
 * NATS-specific facts and handles beside the generic `Transport`.
 *
 * @since 0.1.0
 * @category models
 */
export interface NatsTransportShape {
  /** The underlying connection (for request-reply, KV, or anything cqbus does not wrap). */
  readonly connection: NatsConnection
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
} = {
  reason: "cqbus-dlq-reason",
  error: "cqbus-dlq-error",
  deliveries: "cqbus-dlq-deliveries",
  subject: "cqbus-dlq-subject",
  stream: "cqbus-dlq-stream",
  sequence: "cqbus-dlq-sequence",
  group: "cqbus-dlq-group",
  time: "cqbus-dlq-time"
}

/** Header values cannot carry line breaks. */
const oneLine = (text: string): string => text.replace(/[\r\n]+/g, " ")

/** A delivery as the bus sees it; the stream timestamp becomes a `Date` only if something reads it. */
class JsIncoming implements IncomingMessage {
  readonly subject: string
  readonly body: Uint8Array
  readonly headers: Headers
  readonly deliveryCount: number
  readonly sequence: number
  readonly #msg: JsMsg
  constructor(msg: JsMsg) {
    this.#msg = msg
    this.subject = msg.subject
    this.body = msg.data
    this.headers = fromMsgHdrs(msg.headers)
    this.deliveryCount = msg.info.deliveryCount
    this.sequence = msg.seq
  }
  get publishedAt(): Date {
    return new Date(Math.floor(this.#msg.info.timestampNanos / 1_000_000))
  }
}

const toIncoming = (msg: JsMsg): IncomingMessage => new JsIncoming(msg)

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
 * released when the scope closes.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  config: NatsEventBusConfig = {}
): Effect.Effect<{ readonly transport: TransportShape; readonly nats: NatsTransportShape }, Error, Scope.Scope> =>
  Effect.gen(function*() {
    const resolved = resolveConfig(config)
    const { nc, state } = yield* acquire(config, "nats://127.0.0.1:4222")
    const js: JetStreamClient = jetstream(nc)
    const jsm: JetStreamManager = yield* Effect.tryPromise({
      // `jetstreamManager` asks the server for the account info ($JS.API.INFO) unless told not to; "skip" promises no
      // management call at start-up (accounts may not be allowed any), so it must not probe either.
      try: () => jetstreamManager(nc, { checkAPI: resolved.provisioning !== "skip" }),
      catch: (cause) => new Error(`JetStream is not available: ${cause instanceof Error ? cause.message : String(cause)}`)
    })
    const stream = resolved.stream.name
    yield* provisionStream(jsm, streamConfig(resolved.stream), resolved.provisioning)
    if (resolved.provisioning !== "skip") {
      yield* provisionStream(
        jsm,
        streamConfig({
          name: resolved.deadLetterStream,
          subjects: [`${resolved.deadLetterPrefix}.>`],
          ...(resolved.deadLetterMaxAge === undefined ? {} : { maxAge: resolved.deadLetterMaxAge })
        }),
        resolved.provisioning === "validateOnly" ? "validateOnly" : "createOnly"
      )
    }
    let closed = false
    yield* Effect.addFinalizer(() => Effect.sync(() => (closed = true)))

    const closedError = (topic: string) =>
      new PublishError({ topic, reason: "Closed", retriable: false, message: `cannot publish to ${topic}: the NATS bus is closed` })

    const publish: TransportShape["publish"] = (message) =>
      closed
        ? Effect.fail(closedError(message.topic))
        : Effect.tryPromise({
          try: () =>
            js.publish(message.topic, message.body, {
              msgID: message.eventId,
              headers: toMsgHdrs(message.headers),
              timeout: resolved.publishTimeout
            }),
          catch: (cause) => toPublishError(cause, message.topic)
        }).pipe(Effect.map((ack) => ({ topic: message.topic, stream: ack.stream, sequence: ack.seq, duplicate: ack.duplicate })))

    const deadLetter = (msg: JsMsg, outcome: Extract<Outcome, { _tag: "DeadLetter" }>, group: string | undefined) =>
      Effect.tryPromise(() => {
        const h = natsHeaders()
        if (msg.headers !== undefined) {
          for (const name of msg.headers.keys()) if (name !== "Nats-Msg-Id") h.set(name, msg.headers.get(name))
        }
        h.set(DeadLetterHeaders.reason, oneLine(outcome.reason))
        h.set(DeadLetterHeaders.error, oneLine(outcome.errorTag))
        h.set(DeadLetterHeaders.deliveries, String(Math.max(outcome.attempts, msg.info.deliveryCount)))
        h.set(DeadLetterHeaders.subject, msg.subject)
        h.set(DeadLetterHeaders.stream, msg.info.stream)
        h.set(DeadLetterHeaders.sequence, String(msg.seq))
        if (group !== undefined) h.set(DeadLetterHeaders.group, group)
        h.set(DeadLetterHeaders.time, new Date().toISOString())
        return js.publish(`${resolved.deadLetterPrefix}.${msg.subject}`, msg.data, {
          headers: h,
          // One record per message and group, even when a retried dead-lettering publishes twice.
          msgID: `dlq:${msg.info.stream}:${msg.seq}:${group ?? msg.info.consumer}`,
          timeout: resolved.publishTimeout
        })
      })

    /** Applies an outcome; a dead letter that cannot be stored is naked instead, so it is never lost. */
    const settle = (msg: JsMsg, outcome: Outcome, group: string | undefined): Effect.Effect<void> => {
      switch (outcome._tag) {
        case "Ack":
          return Effect.sync(() => msg.ack())
        case "Nak":
          return Effect.sync(() => msg.nak(Duration.toMillis(outcome.delay)))
        case "Handback":
          return Effect.sync(() => msg.nak())
        case "DeadLetter":
          return deadLetter(msg, outcome, group).pipe(
            Effect.andThen(Effect.sync(() => msg.term(oneLine(outcome.reason).slice(0, 200)))),
            Effect.catchCause((cause) =>
              Effect.andThen(
                Effect.logWarning(`cqbus: cannot store a dead letter for ${msg.subject} #${msg.seq}; redelivering it`, cause),
                Effect.sync(() => msg.nak(1000))
              )
            )
          )
      }
    }

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
        const ensure = (start: Partial<ConsumerConfig>) =>
          Effect.tryPromise({
            try: async () => {
              try {
                const info = await jsm.consumers.info(stream, name)
                if (info.config.filter_subject !== topic) {
                  throw new SubscribeError({
                    topic,
                    group,
                    reason: "GroupConflict",
                    message: `group ${name} already consumes ${info.config.filter_subject} on ${stream}; one group cannot also consume ${topic}`
                  })
                }
              } catch (cause) {
                if (!isNotFound(cause, ApiCodes.ConsumerNotFound)) throw cause
                await jsm.consumers.add(stream, { ...base, ...start })
              }
            },
            catch: (cause) => cause instanceof SubscribeError ? cause : toSubscribeError(cause, topic, group)
          })
        yield* ensure(deliverPolicyConfig(options.deliverPolicy))
        const messages = yield* Effect.tryPromise({
          try: async () =>
            (await js.consumers.get(stream, name)).consume({
              max_messages: options.maxInFlight,
              // After a 409 "consumer deleted" nats.js stops pulling until it has missed two idle heartbeats; with its
              // defaults (30 s pulls, 15 s heartbeats) a recreated consumer got nothing for about 45 s. Short idle
              // heartbeats bound that stall to a few seconds; they only flow while the subscription is idle.
              expires: 5_000,
              idle_heartbeat: 1_000
            }),
          catch: (cause) => toSubscribeError(cause, topic, group)
        })

        // Deliveries being processed, with when they started, for keep-alives and for restarting a lost consumer.
        const inFlight = new Map<JsMsg, number>()
        let lastSequence = 0
        let stopping = false

        // When the server loses the consumer (deleted, or gone after a restart with memory storage), create it again
        // from the oldest delivery not yet settled, so nothing is skipped; nats.js resumes consuming by itself.
        yield* Effect.forkScoped(Effect.promise(async () => {
          for await (const status of messages.status()) {
            if (stopping) return
            if (status.type === "consumer_deleted" || status.type === "consumer_not_found") {
              const floor = Math.min(...[...inFlight.keys()].map((m) => m.seq), lastSequence + 1)
              const start = lastSequence === 0
                ? deliverPolicyConfig(options.deliverPolicy)
                : { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: floor }
              await Effect.runPromise(Effect.ignore(ensure(start)))
            }
          }
        }))

        // Long handlers and in-place retries keep their deliveries alive (`working()`), so ackWait bounds a crashed
        // consumer rather than a slow handler.
        const beat = Math.max(100, Math.floor(ackWait / 3))
        yield* Effect.forkScoped(
          Effect.repeat(
            Effect.sync(() => {
              const now = Date.now()
              for (const [msg, since] of inFlight) if (now - since >= beat) msg.working()
            }),
            Schedule.spaced(Duration.millis(beat))
          )
        )

        const permits = Semaphore.makeUnsafe(options.maxInFlight)
        const fibers = yield* FiberSet.make<unknown, never>()
        const iterator = messages[Symbol.asyncIterator]()
        const handle = (msg: JsMsg) =>
          process(toIncoming(msg)).pipe(
            Effect.onExit((exit) =>
              Effect.andThen(
                settle(msg, exit._tag === "Success" ? exit.value : { _tag: "Handback" }, group),
                Effect.andThen(Effect.sync(() => inFlight.delete(msg)), permits.release(1))
              )
            )
          )
        // The pull loop takes a delivery only when a slot is free, so at most `maxInFlight` run and nats.js buffers at
        // most `max_messages` more. After the stop, whatever is still buffered is handed back at once.
        const loop = Effect.gen(function*() {
          while (true) {
            yield* permits.take(1)
            const next = yield* Effect.promise(() => iterator.next())
            if (next.done === true) return yield* permits.release(1)
            const msg = next.value
            lastSequence = Math.max(lastSequence, msg.seq)
            if (stopping) {
              msg.nak()
              yield* permits.release(1)
              continue
            }
            inFlight.set(msg, Date.now())
            yield* FiberSet.run(fibers)(handle(msg))
          }
        })
        const loopFiber = yield* Effect.forkScoped(loop)

        yield* Effect.addFinalizer(() =>
          Effect.gen(function*() {
            stopping = true
            // Drain the inbox subscription before closing: `close()` alone unsubscribes at once, and messages the
            // server had already sent for the outstanding pull were dropped by the client, left unacknowledged and
            // redelivered only after ackWait. Draining (UNSUB + flush) still delivers them, so the loop hands them
            // back now. `sub` is nats.js internal, hence the guard; nats.js ends the iterator once the drain is done.
            const sub = (messages as unknown as { readonly sub?: { readonly drain?: () => Promise<void> } }).sub
            if (typeof sub?.drain === "function" && !nc.isClosed()) {
              yield* Effect.timeoutOption(Effect.promise(() => sub.drain!().catch(() => undefined)), "2 seconds")
            }
            // Not awaited: `close()` resolves only once the pull loop has read the iterator to its end, and the loop
            // takes a message only when a handler slot is free, so handlers that outlive drainTimeout (or never end)
            // made the close hang forever. The loop is awaited below, after the handlers are done or interrupted.
            yield* Effect.sync(() => void messages.close().catch(() => undefined))
            if (inFlight.size > 0 && Duration.toMillis(options.drainTimeout) > 0) {
              yield* Effect.timeoutOption(FiberSet.awaitEmpty(fibers), options.drainTimeout)
            }
            yield* FiberSet.clear(fibers)
            yield* Effect.timeoutOption(Fiber.await(loopFiber), "2 seconds")
            yield* Effect.promise(() => nc.isClosed() ? Promise.resolve() : nc.flush().catch(() => undefined))
            if (group === undefined && !nc.isClosed()) {
              yield* Effect.promise(() => jsm.consumers.delete(stream, name).catch(() => false))
            }
          })
        )
      })

    const check: TransportShape["check"] = Effect.tryPromise({
      try: async () => {
        if (closed || nc.isClosed()) throw new HealthError({ component: "connection", message: "connection: closed" })
        await nc.flush().catch((cause) => {
          throw toHealthError("connection", cause)
        })
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
            new HealthError({ component: "transport", message: `NATS did not answer within ${resolved.checkTimeout} ms` })
          )
      })
    )

    const deadLetters: Effect.Effect<ReadonlyArray<DeadLetter>> = Effect.promise(async () => {
      const info = await jsm.streams.info(resolved.deadLetterStream)
      const total = info.state.messages
      if (total === 0) return []
      const reader = await js.consumers.get(resolved.deadLetterStream)
      const batch = await reader.fetch({ max_messages: total, expires: 2000 })
      const letters: Array<DeadLetter> = []
      for await (const msg of batch) {
        const all = fromMsgHdrs(msg.headers)
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
    const transport: TransportShape = { name: "nats", publish, consume, check, deadLetters, connection }
    return {
      transport,
      nats: { connection: nc, stream, deadLetterStream: resolved.deadLetterStream, state }
    }
  }).pipe(Effect.mapError((error) => new Error(redact(error.message), { cause: error })))

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
   * The transport as `Transport` and `NatsTransport`; connects, provisions, and drains when the scope closes.
   *
   * @since 0.1.0
   * @category layers
   */
  static layer(config: NatsEventBusConfig = {}): Layer.Layer<Transport | NatsTransport, Error> {
    return Layer.effectContext(
      Effect.map(make(config), ({ nats, transport }) =>
        Context.make(Transport, transport).pipe(Context.add(NatsTransport, nats)))
    )
  }
}
