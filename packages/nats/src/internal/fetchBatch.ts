/**
 * The NATS side of `Fetch`: one JetStream pull request `{batch: max, expires}` on
 * `$JS.API.CONSUMER.MSG.NEXT.<stream>.<group>` for the group's durable consumer (set up as `subscribe` sets it up,
 * `consumerSetup.ts`), the batch collected until it is full or the server ends the request (408 at `expires`), then
 * handed to the bus's batch process and each message answered with its outcome (`settle.ts`: the same verbs and dead
 * letters as the pull loop). While the batch waits and while its handler runs, `+WPI` keep-alives go out at a third of
 * the consumer's ack wait, so a long batch handler is not overtaken by a redelivery.
 */
import type { Outcome } from "@cqbus/core"
import type { FetchRequest, IncomingMessage } from "@cqbus/core/backend"
import { SubscribeError } from "@cqbus/core"
import type { JetStreamManager } from "@nats-io/jetstream"
import { createInbox, nanos, type NatsConnection, type Subscription } from "@nats-io/nats-core"
import { Duration, Effect } from "effect"
import type { ProvisioningStrategy } from "../NatsConfig.ts"
import type { Acker } from "./acks.ts"
import { setUpConsumer } from "./consumerSetup.ts"
import type { DeadLetterWriter } from "./deadLetters.ts"
import { toSubscribeError } from "./errors.ts"
import { headerSourceOf } from "./headers.ts"
import { type JetStreamDelivery, readDelivery } from "./jetStreamDelivery.ts"
import { answer, withinServerLimit } from "./settle.ts"

const ENCODER = new TextEncoder()
const HANDBACK: Outcome = { _tag: "Handback" }
/** How long past `expires` the batch waits for the server's end of the request before taking what came. */
const GRACE_MS = 2_000

/** What a fetch needs of the transport. */
export interface FetchBatchConfig {
  readonly nc: NatsConnection
  readonly jsm: JetStreamManager
  /** The stream the group's consumer reads (`StreamRoutes.streamFor`). */
  readonly stream: string
  readonly strategy: ProvisioningStrategy
  readonly acker: Acker
  readonly deadLetters: DeadLetterWriter
}

/**
 * Fetches one batch for `request.group` and settles it through `process` (see `FetchRequest` for the contract). Fails
 * with `SubscribeError` when the consumer cannot be set up or the server refuses the pull.
 */
export const fetchBatch = (
  config: FetchBatchConfig,
  request: FetchRequest,
  process: (batch: ReadonlyArray<IncomingMessage>) => Effect.Effect<ReadonlyArray<Outcome>>
): Effect.Effect<void, SubscribeError> =>
  Effect.scoped(Effect.gen(function*() {
    const { acker, nc, stream } = config
    const { group, topic } = request
    // The group's consumer, exactly as a subscription of the group would have it (created, reconciled or refused).
    const { settings } = yield* setUpConsumer({
      nc,
      jsm: config.jsm,
      stream,
      name: group,
      strategy: config.strategy,
      options: {
        topic,
        group,
        deliverPolicy: request.deliverPolicy,
        maxInFlight: request.max,
        ackWait: request.ackWait,
        drainTimeout: Duration.zero
      }
    })
    // A group created elsewhere may limit pulls: ask for no more than it allows (the server would refuse it, 409).
    const max = settings.maxBatch === undefined ? request.max : Math.min(request.max, settings.maxBatch)
    const wanted = Duration.toMillis(request.expires)
    const expires = settings.maxExpires === undefined ? wanted : Math.min(wanted, settings.maxExpires)

    /** Received and not answered yet: kept alive, and handed back if the fetch ends without answering them. */
    const unanswered = new Set<JetStreamDelivery>()
    const batch: Array<JetStreamDelivery> = []
    const beat = Math.max(100, Math.floor(settings.ackWait / 3))
    yield* Effect.forkScoped(Effect.forever(Effect.andThen(
      Effect.sleep(Duration.millis(beat)),
      Effect.sync(() => {
        for (const delivery of unanswered) acker.working(delivery)
      })
    )))
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        for (const delivery of unanswered) acker.handBack(delivery)
        unanswered.clear()
      })
    )

    // The pull: complete when the batch is full or the server ends the request (408 at expires, 409, 404).
    const pulled = Effect.callback<void, SubscribeError>((resume) => {
      const inbox = createInbox()
      let sub: Subscription | undefined = undefined
      const done = (error?: SubscribeError) => {
        sub?.unsubscribe()
        resume(error === undefined ? Effect.void : Effect.fail(error))
      }
      sub = nc.subscribe(inbox, {
        callback: (error, msg) => {
          if (error !== null) return done(toSubscribeError(error, topic, group, stream))
          const parsed = headerSourceOf(msg)
          const reply = msg.reply
          if (reply === undefined || reply === "") {
            // 100 is an idle heartbeat; anything else ends the request.
            if (parsed.code === 100) return
            if (parsed.code === 409 && batch.length === 0 && !/consumer deleted/i.test(parsed.description)) {
              // A pull the consumer refuses ("Exceeded MaxWaiting", ...): fail rather than return empty batches in a loop.
              return done(
                new SubscribeError({
                  topic,
                  group,
                  reason: "Transport",
                  message: `cannot fetch ${topic} for group ${group}: ${stream} > ${group} refused the pull (409 ${parsed.description})`
                })
              )
            }
            return done()
          }
          const delivery = readDelivery(msg, reply, parsed)
          if (delivery === undefined) return
          batch.push(delivery)
          unanswered.add(delivery)
          if (batch.length >= max) done()
        }
      })
      nc.publish(
        `$JS.API.CONSUMER.MSG.NEXT.${stream}.${group}`,
        ENCODER.encode(`{"batch":${max},"expires":${nanos(expires)}}`),
        { reply: inbox }
      )
      return Effect.sync(() => sub?.unsubscribe())
    })
    // A request whose end never comes (the server went away) ends here; what came is the batch.
    yield* Effect.timeoutOption(pulled, Duration.millis(expires + GRACE_MS))
    if (batch.length === 0) return

    const exit = yield* Effect.exit(process(batch))
    const outcomes = exit._tag === "Success" ? exit.value : []
    const storing: Array<Effect.Effect<void>> = []
    batch.forEach((delivery, index) => {
      unanswered.delete(delivery)
      const outcome = withinServerLimit(delivery, outcomes[index] ?? HANDBACK, settings.maxDeliver)
      const pending = answer(delivery, outcome, acker, config.deadLetters)
      if (pending !== undefined) storing.push(pending)
    })
    // Dead letters are stored (each a publish awaiting its PubAck) before the fetch returns.
    yield* Effect.all(storing, { concurrency: "unbounded", discard: true })
    if (exit._tag === "Failure") return yield* Effect.failCause(exit.cause)
  }))
