/**
 * A JetStream pull consumer driven directly over a core NATS subscription. nats.js's `consume()` builds a `JsMsg`,
 * decodes every header into a `MsgHdrs`, and pulls by buffer size without knowing how many handlers are free; here a
 * delivery costs one small record, the headers the bus needs are read from the raw block without building any map, a
 * handler that finishes at once is settled in the same tick (so the acks of one socket read share one write), and the
 * consumer pulls only as many messages as it has handler slots plus one slot of read-ahead each, so a slow handler
 * never leaves a pile of delivered messages ageing towards `ackWait` in a client buffer.
 *
 * The JetStream pull protocol used (nats-server 2.9+): a request `{batch, expires, idle_heartbeat}` to
 * `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>` with our inbox as reply; the server sends up to `batch` messages to
 * the inbox (their reply subject `$JS.ACK....` carries delivery count, stream sequence and timestamp), idle heartbeats
 * (status 100) while the request waits, and ends an unfulfilled request with status 408 (expired) or 409 (e.g.
 * consumer deleted), whose `Nats-Pending-Messages` header says how many of its messages will not come.
 *
 * This module is the loop alone (pulls, read-ahead, keep-alives, recovery, the drain); the handler slots it shares with
 * the core subscription of ephemeral topics (`handlerSlots.ts`), the answers to a delivery (`acks.ts`), dead letters
 * (`deadLetters.ts`) and the consumer on the server (`consumerSetup.ts`) are its collaborators.
 */
import type { Outcome } from "@cqbus/core"
import type { IncomingMessage } from "@cqbus/core/backend"
import { createInbox, type Msg, type NatsConnection, nanos, type Subscription } from "@nats-io/nats-core"
import { Duration, Effect, type Scope } from "effect"
import type { Acker } from "./acks.ts"
import type { ConsumerSettings, ServerConsumer } from "./consumerSetup.ts"
import type { DeadLetterWriter } from "./deadLetters.ts"
import { deniedPublishSubject, deniedSubscribeSubject } from "./errors.ts"
import { failIfRefused, HandlerSlots } from "./handlerSlots.ts"
import { type HeaderSource, headerSourceOf } from "./headers.ts"
import { type JetStreamDelivery, readDelivery } from "./jetStreamDelivery.ts"
import { answer, withinServerLimit } from "./settle.ts"

const ENCODER = new TextEncoder()
const HANDBACK: Outcome = { _tag: "Handback" }

/** What a pull loop works with: the consumer it pulls from and its named collaborators. */
export interface PullLoopConfig {
  readonly nc: NatsConnection
  readonly stream: string
  readonly consumer: string
  /** Handlers running at once; the loop also reads ahead this many. */
  readonly maxInFlight: number
  readonly drainTimeout: Duration.Duration
  /**
   * The consumer's settings as the server reports them (not as the subscription asked: an existing group may differ):
   * keep-alives for running handlers go out at a third of its ackWait, and the last delivery its finite
   * `max_deliver` allows is dead-lettered instead of being silently dropped by the server.
   */
  readonly settings: ConsumerSettings
  readonly process: (message: IncomingMessage) => Effect.Effect<Outcome>
  readonly acker: Acker
  readonly deadLetters: DeadLetterWriter
  /** The consumer on the server: whether it is missing, its ack floor, recreating it. */
  readonly server: ServerConsumer
  /** The idle heartbeat each pull request asks for, in ms (`SubscribeOptions.idleHeartbeat`; default 1 s). */
  readonly heartbeat?: number
  /** For the line an outcome leaves that a consumer without acks cannot apply. */
  readonly topic: string
  readonly group: string | undefined
}

/** A running pull consumer. */
export interface PullConsumer {
  /** `true` from the moment its scope starts closing. */
  readonly draining: () => boolean
  /**
   * When the oldest handler still running in the background started (`Date.now()` milliseconds), or `undefined` when
   * none runs: the `oldestUnackedAge` of the consumer's lag.
   */
  readonly oldestRunningSince: () => number | undefined
}

/** Pull requests live this long on the server; idle ones are renewed. */
const EXPIRES_MS = 5_000
/** Idle heartbeats while a request waits (default): a silent server is noticed within a few of them. */
const HEARTBEAT_MS = 1_000

interface PullRequest {
  readonly batch: number
  readonly expiresAt: number
}

/**
 * Starts a pull consumer; it runs until the scope closes, then drains (stop pulling, hand back what is buffered, let
 * running handlers finish within `drainTimeout`, interrupt and hand back the rest, flush). Fails with the server's
 * permission error when this connection may not consume (subscribe to the inbox, publish the pull request).
 */
export const startPullConsumer = (config: PullLoopConfig): Effect.Effect<PullConsumer, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const { acker, maxInFlight, nc, server, settings } = config
    const context = yield* Effect.context<never>()
    const runFork = Effect.runForkWith(context)
    const inbox = createInbox()
    const nextSubject = `$JS.API.CONSUMER.MSG.NEXT.${config.stream}.${config.consumer}`
    const heartbeat = config.heartbeat ?? HEARTBEAT_MS
    // The server refuses a request whose heartbeat is more than half its expiry: longer heartbeats, longer requests.
    const wanted = Math.max(EXPIRES_MS, heartbeat * 3)
    const expires = settings.maxExpires !== undefined && settings.maxExpires < wanted ? settings.maxExpires : wanted
    const capacity = maxInFlight * 2
    // Pull again once a quarter of the capacity is free: big enough batches, small enough gaps.
    const threshold = Math.max(1, Math.floor(capacity / 4))

    const requests: Array<PullRequest> = []
    let requested = 0
    let lastSequence = 0
    /** Stream sequences naked with a delay and not delivered again yet. */
    const naked = new Set<number>()
    /** The consumer's ack floor as last read from the server (0 before): what other members may still hold. */
    let ackFloor = 0
    let stopping = false
    let seen = 0
    /** Messages the stream still had for the consumer after the last delivery (its reply subject's last number). */
    let streamPending = 0
    /** While the drain waits for its open requests: deliveries are kept in the queue, to be handed back after. */
    let holding = false
    /** Called by the drain once the open requests are used up (`requested` reached 0). */
    let requestsWaiter: (() => void) | undefined

    const pull = () => {
      if (stopping || nc.isClosed()) return
      let free = capacity - requested - slots.running - slots.buffered
      if (free < threshold) return
      if (settings.maxBatch !== undefined && free > settings.maxBatch) free = settings.maxBatch
      requests.push({ batch: free, expiresAt: Date.now() + expires })
      requested += free
      nc.publish(
        nextSubject,
        ENCODER.encode(`{"batch":${free},"expires":${nanos(expires)},"idle_heartbeat":${nanos(heartbeat)}}`),
        { reply: inbox }
      )
    }

    // The server spreads the messages of several open requests over them as it likes, so only the total is counted:
    // one less per message, and the undelivered rest of a request when its end (408/409) says how many.
    const took = () => {
      if (requested > 0) requested--
      if (requested === 0 && requestsWaiter !== undefined) requestsWaiter()
    }

    /** An open request ended; `pending` of its messages will not come (all of them when unknown). */
    const ended = (pending: number | undefined) => {
      const request = requests.shift()
      const gone = pending ?? request?.batch ?? 0
      requested = Math.max(0, requested - gone)
      if (requests.length === 0) requested = 0
      if (requested === 0 && requestsWaiter !== undefined) requestsWaiter()
    }

    const forgetRequests = () => {
      requests.length = 0
      requested = 0
    }

    let serverMaxDeliver = settings.maxDeliver
    let ackNone = settings.ackNone
    /**
     * Without acks (`ackPolicy: "none"`) the server has already forgotten the message: an outcome other than `Ack` is
     * one warning line, and the message is neither redelivered nor dead-lettered.
     */
    const dropped = (delivery: JetStreamDelivery, outcome: Outcome): void => {
      if (outcome._tag === "Ack") return
      const group = config.group === undefined ? "subscription" : `group ${config.group}`
      const detail = outcome._tag === "Nak" ? `: ${outcome.error}` : outcome._tag === "DeadLetter" ? `: ${outcome.reason}` : ""
      runFork(Effect.logWarning(
        `cqbus: a message on ${delivery.subject} (${group} of ${config.topic}) is dropped: ackPolicy "none" neither ` +
          `redelivers nor dead-letters it (outcome ${outcome._tag}${detail})`
      ))
    }
    /** A hand-back, or for a consumer without acks, the line saying the message is dropped. */
    const handBack = (delivery: JetStreamDelivery): void =>
      ackNone ? dropped(delivery, HANDBACK) : acker.handBack(delivery)
    const settle = (delivery: JetStreamDelivery, outcome: Outcome): void => {
      if (ackNone) {
        dropped(delivery, outcome)
        return release()
      }
      outcome = withinServerLimit(delivery, outcome, serverMaxDeliver)
      // Waiting on the server for its redelivery: a consumer recreated meanwhile must start at or below it.
      if (outcome._tag === "Nak") naked.add(delivery.sequence)
      const storing = answer(delivery, outcome, acker, config.deadLetters)
      if (storing === undefined) return release()
      // Storing the dead letter is a publish awaiting its PubAck; the slot stays taken until it is done.
      runFork(storing).addObserver(release)
    }

    // Buffered deliveries start as slots free up, and the loop pulls for the room freed; none start once the drain
    // begins (they are handed back).
    const slots: HandlerSlots<JetStreamDelivery> = new HandlerSlots<JetStreamDelivery>({
      maxInFlight,
      runFork,
      process: config.process,
      settle,
      canStart: () => !stopping,
      afterPump: pull,
      // A failure's backoff before the message comes again.
      defectDelay: Duration.seconds(1)
    })
    const release = () => slots.release()

    let warnedAt = 0
    const onStatus = (parsed: HeaderSource) => {
      switch (parsed.code) {
        case 100: // idle heartbeat
          return
        case 404: // no messages (no_wait requests only)
        case 408: // the request expired
        case 409: { // the request ended early: consumer deleted, leadership change, a limit of the consumer, ...
          const header = parsed.get("Nats-Pending-Messages")
          const pending = header === undefined ? Number.NaN : Number(header)
          ended(Number.isFinite(pending) ? pending : undefined)
          if (parsed.code === 409 && /consumer deleted/i.test(parsed.description)) {
            forgetRequests()
            runFork(recover)
            return
          }
          if (parsed.code === 409 && !Number.isFinite(pending)) {
            // A request the consumer refuses ("Exceeded MaxRequestBatch", "Exceeded MaxWaiting", ...): pulling again
            // at once would be refused again, in a loop. The next tick (at most a second away) pulls again.
            const now = Date.now()
            if (now - warnedAt > 60_000) {
              warnedAt = now
              runFork(Effect.logWarning(`cqbus: ${config.stream} > ${config.consumer} refused a pull: 409 ${parsed.description}`))
            }
            return
          }
          return pull()
        }
        default:
          // 400 (bad request) or 503 (no responders: JetStream is away): do not loop; the tick pulls again.
          return ended(undefined)
      }
    }

    const onMessage = (msg: Msg) => {
      seen++
      const parsed = headerSourceOf(msg)
      const reply = msg.reply
      if (reply === undefined || reply === "") {
        if (parsed.code > 0) onStatus(parsed)
        return
      }
      took()
      const delivery = readDelivery(msg, reply, parsed)
      if (delivery === undefined) return
      if (delivery.sequence > lastSequence) lastSequence = delivery.sequence
      if (naked.size > 0) naked.delete(delivery.sequence)
      streamPending = delivery.pending
      if (stopping) return holding ? slots.push(delivery) : handBack(delivery)
      if (slots.free) slots.start(delivery)
      else slots.push(delivery)
    }

    /** Why the server refused to let this connection consume (no subscribe on the inbox, no publish of pulls). */
    let denied: unknown = undefined
    const sub: Subscription = nc.subscribe(inbox, {
      callback: (error, msg) => {
        if (error !== null) {
          if (deniedSubscribeSubject(error) === inbox) denied ??= error
          return
        }
        try {
          onMessage(msg)
        } catch (cause) {
          // A bug here must not kill the subscription; the message is redelivered after ackWait.
          runFork(Effect.logError("cqbus: cannot process a NATS delivery", cause))
        }
      }
    })

    /**
     * The oldest stream sequence that may not be settled yet: a recreated consumer starts there, so nothing is
     * skipped. Below the running and buffered deliveries, the ones naked with a delay, and the last ack floor the server
     * reported (messages other members of the group may hold); at worst some acked messages come again.
     */
    const floor = (): number | undefined => {
      if (lastSequence === 0 && ackFloor === 0) return undefined
      let min = lastSequence + 1
      for (const delivery of slots.backgroundDeliveries()) if (delivery.sequence < min) min = delivery.sequence
      slots.forEachBuffered((delivery) => {
        if (delivery.sequence < min) min = delivery.sequence
      })
      for (const sequence of naked) if (sequence < min) min = sequence
      if (ackFloor > 0 && ackFloor + 1 < min) min = ackFloor + 1
      return min
    }

    // Not while stopping: an ephemeral consumer is deleted after the drain and must not come back.
    const recover: Effect.Effect<void> = Effect.suspend(() =>
      stopping ? Effect.void : Effect.map(server.recreate(floor()), (settings) => {
        beat = beatOf(settings.ackWait)
        serverMaxDeliver = settings.maxDeliver
        ackNone = settings.ackNone
      })
    ).pipe(
      Effect.andThen(Effect.sync(() => {
        forgetRequests()
        pull()
      })),
      Effect.catchCause(() => Effect.void)
    )

    // Keep-alives for handlers that run in the background and for buffered deliveries, renewal of lost requests, and
    // the check for a silent server: with a request open the server sends a heartbeat every second, so nothing for
    // three heartbeats means the request (or the consumer) is gone.
    const beatOf = (ackWait: number) => Math.max(100, Math.min(heartbeat, Math.floor(ackWait / 3)))
    let beat = beatOf(settings.ackWait)
    let lastSeen = 0
    let silentSince = Date.now()
    let checking = false
    let ticks = 0
    const tick = Effect.suspend(() => {
      if (nc.isClosed()) return Effect.void
      const now = Date.now()
      // Also while draining: a handler still running inside drainTimeout must not be redelivered to another member.
      // Without acks nothing times out, so nothing needs keeping alive.
      if (!ackNone) {
        for (const delivery of slots.backgroundDeliveries()) if (now - delivery.since >= beat) acker.working(delivery)
        slots.forEachBuffered((delivery) => acker.working(delivery))
      }
      if (stopping) return Effect.void
      while (requests.length > 0 && requests[0]!.expiresAt + heartbeat * 2 < now) ended(undefined)
      // The ack floor, for recreating the consumer without skipping what other members hold, about every 30 s.
      if (++ticks % Math.max(1, Math.round(30_000 / beat)) === 0 && !checking) {
        checking = true
        runFork(Effect.map(server.ackFloor, (floor) => {
          if (floor !== undefined) ackFloor = floor
        })).addObserver(() => {
          checking = false
        })
      }
      if (seen !== lastSeen || requests.length === 0) {
        lastSeen = seen
        silentSince = now
        pull()
        return Effect.void
      }
      if (now - silentSince < heartbeat * 3 || checking) return Effect.void
      silentSince = now
      forgetRequests()
      // In its own fiber: asking the server may take its request timeout, and keep-alives must not wait for it.
      checking = true
      runFork(Effect.flatMap(server.missing, (missing) => missing ? recover : Effect.sync(pull))).addObserver(() => {
        checking = false
      })
      return Effect.void
    })
    yield* Effect.forkScoped(
      Effect.forever(Effect.andThen(Effect.suspend(() => Effect.sleep(Duration.millis(beat))), tick))
    )

    // After a reconnect the server may have forgotten our open requests (a restarted server certainly has).
    const statuses = nc.status()
    yield* Effect.addFinalizer(() => Effect.sync(() => (statuses as { readonly stop?: () => void }).stop?.()))
    yield* Effect.forkScoped(Effect.promise(async () => {
      for await (const status of statuses) {
        if (stopping) return
        if (status.type === "error" && deniedPublishSubject(status.error) === nextSubject) denied ??= status.error
        if (status.type === "reconnect") await Effect.runPromise(Effect.sync(() => {
          forgetRequests()
          pull()
        }))
      }
    }))

    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        stopping = true
        // nats-server 2.9 cannot cancel a pull request and fills it from another goroutine: a request sent just before
        // the close can be answered after the UNSUB below, into an inbox that is gone, and those messages wait for
        // ackWait. While the stream has messages for us, keep the inbox until the open requests are used up. What
        // arrives meanwhile is held in the queue (kept alive by the tick), not handed back yet: the server would
        // redeliver it into the same open requests, each round costing a delivery attempt. An idle consumer's requests
        // stay open with nothing to send, so it does not wait.
        if (!nc.isClosed() && requested > 0 && streamPending > 0) {
          holding = true
          yield* Effect.timeoutOption(
            Effect.callback<void>((resume) => {
              if (requested <= 0) return resume(Effect.void)
              requestsWaiter = () => {
                requestsWaiter = undefined
                resume(Effect.void)
              }
            }),
            "2 seconds"
          )
          requestsWaiter = undefined
          holding = false
        }
        for (const delivery of slots.takeBuffered()) handBack(delivery)
        // Drain the inbox (UNSUB + flush) rather than unsubscribing at once: messages the server already sent for an
        // open request still arrive and are handed back by the callback instead of waiting for ackWait.
        if (!nc.isClosed()) {
          yield* Effect.timeoutOption(Effect.promise(() => sub.drain().catch(() => undefined)), "2 seconds")
        } else sub.unsubscribe()
        if (slots.running > 0 && Duration.toMillis(config.drainTimeout) > 0) {
          yield* Effect.timeoutOption(slots.idle, config.drainTimeout)
        }
        // Interrupted handlers settle as hand-backs through their observers.
        slots.interrupt()
        if (slots.running > 0) yield* Effect.timeoutOption(slots.idle, "2 seconds")
        if (!nc.isClosed()) yield* Effect.promise(() => nc.flush().catch(() => undefined))
      })
    )

    pull()
    // Without the permission to subscribe to the inbox or to publish the pull request the server answers `-ERR` once,
    // asynchronously, and nothing would ever arrive: a subscription that silently never delivers. The round trip
    // settles it (the server answers the subscription and the pull before the PONG), so it fails typed instead.
    yield* failIfRefused(nc, sub, () => denied, () => {
      stopping = true
    })
    return { draining: () => stopping, oldestRunningSince: () => slots.oldestRunningSince() }
  })
