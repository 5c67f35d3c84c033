/**
 * The byte-level port every backend implements. The typed `EventBus` encodes, decodes and decides what happens to a
 * delivery; a `Transport` only stores, moves and acknowledges bytes. Keeping the port this small is what lets one
 * conformance suite (`@cqbus/testkit`) hold every backend to the same delivery semantics.
 *
 * Contract for `consume`: the transport calls `process` for each delivery, at most `maxInFlight` at a time, and
 * applies the `Outcome` it returns — `Ack` acknowledges, `Nak` redelivers after the delay, `DeadLetter` stores the
 * original bytes, headers and reason in the dead letters and removes the message, `Handback` makes it available again
 * at once. When the scope of `consume` closes, the transport stops taking new messages, waits up to `drainTimeout` for
 * the running `process` effects, interrupts the rest and hands their messages back. An interrupted `process` always
 * means `Handback`. While `process` runs, the transport keeps the delivery from timing out. The transport never drops a
 * message it has not been told to ack or dead-letter.
 *
 * @module
 */
import type { Duration, Effect, Scope, Stream } from "effect"
import { Context } from "effect"
import type { DeadLetterError, HealthError, PublishError, SubscribeError } from "./Errors.ts"
import type { TopicRegistry } from "./TopicConfig.ts"

/**
 * Message headers: lower-case names (except NATS's own `Nats-*` names) to string values.
 *
 * @since 0.1.0
 * @category models
 */
export type Headers = Readonly<Record<string, string>>

/**
 * A message on its way out: the bytes, the headers and the facts the transport needs for storage and dedupe.
 *
 * @since 0.1.0
 * @category models
 */
export interface OutgoingMessage {
  /** The concrete topic (subject) to publish on. */
  readonly topic: string
  readonly body: Uint8Array
  readonly headers: Headers
  /** The event id: the transport drops a second message with the same id inside its dedupe window. */
  readonly eventId: string
  /**
   * `false` when the bus generated the id for this one publish (a random UUID cannot repeat), so a backend that
   * dedupes in process may skip its bookkeeping; brokers still receive the id.
   */
  readonly dedupe: boolean
  /** The ordering key, when the event has one. */
  readonly key: string | undefined
}

/**
 * Where a published message was stored.
 *
 * @since 0.1.0
 * @category models
 */
export interface PublishAck {
  readonly topic: string
  /** The stream (log) that stored the message. */
  readonly stream: string
  /** Its sequence number in that stream. */
  readonly sequence: number
  /** `true` when the event id was seen inside the dedupe window: nothing new was stored. */
  readonly duplicate: boolean
  /**
   * `true` when the topic is ephemeral: the event went to the subscribers listening at the time and nothing was
   * stored (`stream` is `""`, `sequence` is 0, and no dedupe applies). Absent for a stored event.
   */
  readonly ephemeral?: boolean
}

/**
 * A message as the transport delivers it.
 *
 * @since 0.1.0
 * @category models
 */
export interface IncomingMessage {
  /** The subject the message was published on. */
  readonly subject: string
  readonly body: Uint8Array
  readonly headers: Headers
  /**
   * One header by its lower-case name, where the backend can read it without building `headers` (optional: the bus
   * reads two or three headers per delivery, and a backend that parses wire headers lazily saves the rest).
   */
  readonly header?: (name: string) => string | undefined
  /** How many times this message has been delivered to this group, this delivery included (1 for the first). */
  readonly deliveryCount: number
  /** The stream sequence, where the backend has one. */
  readonly sequence: number | undefined
  /** When the message was stored, where the backend knows it. */
  readonly publishedAt: Date | undefined
  /**
   * `false` when the backend cannot deliver this message again (an ephemeral topic's): the bus then treats the
   * delivery as the last attempt, so a failed handler dead-letters it (retries in place, as `ordering: "key"` makes,
   * still apply). Absent means `true`.
   */
  readonly redeliverable?: boolean
}

/**
 * What the transport does with a delivery once it has been processed.
 *
 * @since 0.1.0
 * @category models
 */
export type Outcome =
  | { readonly _tag: "Ack" }
  | {
    readonly _tag: "Nak"
    readonly delay: Duration.Duration
    readonly error: string
    /** The tag of the error that caused it, for a backend that cannot redeliver (an ephemeral topic dead-letters). */
    readonly errorTag: string
  }
  | {
    readonly _tag: "DeadLetter"
    readonly reason: string
    /** The tag of the error that caused it (`"Reject"`, `"DecodeError"`, ...). */
    readonly errorTag: string
    /** Handler runs made, in-place retries included (the transport's delivery count can be lower). */
    readonly attempts: number
  }
  | { readonly _tag: "Handback" }

/**
 * Where a new consumer starts. Only applies when the consumer (group) is created; an existing group resumes after its
 * last acknowledged message. `"last"`: the latest retained message the topic or pattern matches, then new ones;
 * `"lastPerSubject"`: the latest retained message of each concrete subject the pattern matches, then new ones.
 *
 * @since 0.1.0
 * @category models
 */
export type DeliverPolicy =
  | "all"
  | "new"
  | "last"
  | "lastPerSubject"
  | { readonly fromSequence: number }
  | { readonly fromTime: Date }

/**
 * What `consume` needs to know.
 *
 * @since 0.1.0
 * @category models
 */
export interface ConsumeOptions {
  /** The topic or wildcard pattern (already validated). */
  readonly topic: string
  /** The durable group: members of one group share its messages and its position. `undefined`: an ephemeral consumer. */
  readonly group: string | undefined
  readonly deliverPolicy: DeliverPolicy
  /** How many `process` effects may run at once. */
  readonly maxInFlight: number
  /**
   * How long a delivery may go without a sign of life before the backend redelivers it. While `process` runs, the
   * transport itself keeps the delivery alive (NATS `working()`), so this bounds a crashed consumer, not a slow handler.
   */
  readonly ackWait: Duration.Duration
  /** How long closing the scope waits for running `process` effects before handing their messages back. */
  readonly drainTimeout: Duration.Duration
  /**
   * An infrastructure subscription (`SubscribeOptions.internal`, e.g. the health heartbeat): leave it out of the
   * `consumers` capability. Absent means `false`.
   */
  readonly internal?: boolean
  /**
   * `"original"`: deliver retained messages at the rate they were stored (the gap between two deliveries is the gap
   * between their stored times) until the consumer has caught up, then as they come. Absent means `"instant"`.
   */
  readonly replay?: "instant" | "original"
  /**
   * The most messages the whole consumer (every member of a group) holds delivered and not yet settled; the backend
   * delivers no more until one settles. Absent: the backend's default.
   */
  readonly maxAckPending?: number
  /**
   * `"none"`: nothing is acknowledged and every message is delivered once, whatever its outcome (fire-and-forget
   * reads); an outcome other than `Ack` is only logged. Absent means `"explicit"`.
   */
  readonly ackPolicy?: "explicit" | "none"
  /** How often a broker signals an idle consumer that it is alive, where the backend uses such heartbeats. */
  readonly idleHeartbeat?: Duration.Duration
  /**
   * How long an ephemeral consumer may go without a subscriber before a broker deletes it (only without a `group`),
   * where the backend keeps consumers on a server.
   */
  readonly inactiveThreshold?: Duration.Duration
  /** A description of the consumer, where the backend stores one. */
  readonly description?: string
  /** Labels of the consumer, where the backend stores them. */
  readonly metadata?: Readonly<Record<string, string>>
}

/**
 * A dead-lettered message: the original bytes and headers, and why and when it was given up on.
 *
 * @since 0.1.0
 * @category models
 */
export interface DeadLetter {
  readonly subject: string
  readonly body: Uint8Array
  readonly headers: Headers
  readonly reason: string
  readonly errorTag: string
  /** Deliveries made before giving up. */
  readonly deliveryCount: number
  /** The original stream sequence, where known. */
  readonly sequence: number | undefined
  readonly group: string | undefined
  readonly deadLetteredAt: Date
}

/**
 * The state of a backend's connection to its broker, for health checks and metrics.
 *
 * @since 0.1.0
 * @category models
 */
export interface ConnectionState {
  readonly status: "connected" | "disconnected" | "reconnecting" | "closed"
  /** Reconnects since the transport started. */
  readonly reconnects: number
  /** The last error the client reported, without credentials. */
  readonly lastError: string | undefined
  /** The server the client is (or was last) connected to, without credentials. */
  readonly server: string | undefined
}

/**
 * One thing that happened to a backend's connection to its broker. `ConnectionState` is where the connection is; an
 * event is how it got there, so a counter of disconnects or reconnects does not miss a drop that healed between two
 * reads of the state. Server addresses and reasons carry no credentials.
 *
 * - `Connected`: the connection is up (the first element of `ConnectionWatch.events` while it is).
 * - `Disconnected`: the connection to `server` was lost; the client starts reconnecting (unless reconnects are off).
 * - `Reconnecting`: one attempt to reach a server; `attempt` counts from 1 within this outage.
 * - `Reconnected`: the connection is restored, to `server`, after `attempts` attempts.
 * - `Closed`: the connection is closed for good; `reason` says why (`"closed"` when the application closed it).
 *
 * @since 0.1.0
 * @category models
 */
export type ConnectionEvent =
  | { readonly _tag: "Connected"; readonly server: string | undefined }
  | { readonly _tag: "Disconnected"; readonly server: string | undefined }
  | { readonly _tag: "Reconnecting"; readonly attempt: number }
  | { readonly _tag: "Reconnected"; readonly server: string | undefined; readonly attempts: number }
  | { readonly _tag: "Closed"; readonly reason: string }

/**
 * The connection-state capability: the current state, its changes and, where the backend reports them, the events
 * that changed it.
 *
 * @since 0.1.0
 * @category models
 */
export interface ConnectionWatch {
  readonly get: Effect.Effect<ConnectionState>
  /** The current state, then every change, for as long as the transport lives. */
  readonly changes: Stream.Stream<ConnectionState>
  /**
   * `Connected` when the connection is up at the time of subscribing (`Closed` when it is already closed), then every
   * later event; the stream ends after `Closed`. Optional, so a backend (or a test fake) that only tracks the state
   * still implements the capability; a reader falls back to `changes` without it.
   */
  readonly events?: Stream.Stream<ConnectionEvent>
}

/**
 * The backlog of one live consumer (subscription) of a transport.
 *
 * @since 0.1.0
 * @category models
 */
export interface ConsumerLag {
  /** The topic or pattern consumed. */
  readonly topic: string
  readonly group: string | undefined
  /** The backend's name for the consumer (the durable name on NATS). */
  readonly consumer: string
  /** Messages stored for this consumer and not yet delivered to it. */
  readonly pending: number
  /** Messages delivered and not yet acknowledged. */
  readonly ackPending: number
  /** Messages delivered more than once and not yet acknowledged. */
  readonly redelivered: number
  /** `true` while the subscription is draining (its scope is closing). */
  readonly draining: boolean
  /** Live subscriptions of this process in the consumer, where the backend counts them (the memory `groups`). */
  readonly members?: number
  /**
   * The age of the oldest unacknowledged delivery this process is working on: how long the longest-running handler of
   * the consumer has been running, from the moment the transport handed it the delivery until it is acked, nak'd,
   * dead-lettered or handed back. A slow or stuck handler shows here; a message waiting out a redelivery delay counts in
   * `redelivered` instead. `Duration.zero` when no handler runs; absent when the backend does not track it.
   */
  readonly oldestUnackedAge?: Duration.Duration
}

/**
 * The publisher's depth: publishes the backend has taken and not yet confirmed (on NATS, awaiting their PubAck), and
 * publishes waiting for a slot or a connection before they can go out.
 *
 * @since 0.1.0
 * @category models
 */
export interface PublishDepth {
  /** Sent, awaiting the broker's confirmation. */
  readonly inFlight: number
  /** Not sent yet: waiting for a free slot (backpressure), a connection, or a stream leader. */
  readonly waiting: number
}

/**
 * The interface a backend implements. Optional members are capabilities: a backend that lacks one leaves it out and
 * says so in its conformance features.
 *
 * @since 0.1.0
 * @category models
 */
export interface TransportShape {
  /** A short backend name for errors and health output (`"memory"`, `"nats"`). */
  readonly name: string
  readonly publish: (message: OutgoingMessage) => Effect.Effect<PublishAck, PublishError>
  /**
   * Starts a consumer; it runs until the scope closes, then drains (see the module contract). Succeeds once the
   * consumer exists, so messages published afterwards are guaranteed to reach it.
   */
  readonly consume: (
    options: ConsumeOptions,
    process: (message: IncomingMessage) => Effect.Effect<Outcome>
  ) => Effect.Effect<void, SubscribeError, Scope.Scope>
  /** Succeeds while the transport can publish and deliver. */
  readonly check: Effect.Effect<void, HealthError>
  /** Reads the dead letters, newest last (capability). */
  readonly deadLetters?: Effect.Effect<ReadonlyArray<DeadLetter>>
  /** The connection to the broker (capability; an embedded backend has none). */
  readonly connection?: ConnectionWatch
  /** The live consumers and their backlog (capability). Fails when the backend cannot be asked right now. */
  readonly consumers?: Effect.Effect<ReadonlyArray<ConsumerLag>, HealthError>
  /** The publisher's depth right now (capability): how many publishes await confirmation or a slot. */
  readonly publishing?: Effect.Effect<PublishDepth>
  /**
   * `true` once the transport is closed or while a group (durable) subscription drains (capability): a readiness check
   * should fail then, so traffic moves elsewhere while in-flight work finishes. Group subscriptions live as long as the
   * service, so one draining means the service is going away; an ephemeral subscription closing (often short-lived, per
   * request) does not count, though `consumers` shows it draining.
   */
  readonly draining?: Effect.Effect<boolean>
  /**
   * Per-topic persistence (capability): the registry of `TopicConfig`; publish and consume route by it. A backend
   * without it stores every topic.
   */
  readonly topics?: TopicRegistry
  /**
   * Dead-letter administration (capability): list with filters and paging, read one record, remove records by id,
   * purge by filter, without ever reading the whole store at once. `DeadLetters` (core) builds listing, inspection,
   * replay and purge on it the same way for every backend.
   */
  readonly deadLetterStore?: DeadLetterStore
  /**
   * Fetch batches (capability): pulls up to `request.max` messages of the group at once and hands them to `process`
   * as one batch, then applies the `Outcome` it returns for each (see `FetchRequest` for the contract).
   */
  readonly fetch?: (
    request: FetchRequest,
    process: (batch: ReadonlyArray<IncomingMessage>) => Effect.Effect<ReadonlyArray<Outcome>>
  ) => Effect.Effect<void, SubscribeError>
}

// An explicitly typed key instead of `class extends Context.Service<...>()(...)`: JSR and `isolatedDeclarations`
// reject a call expression as a superclass (DESIGN §6). Every service tag of cqbus is declared this way.
const TransportKey: Context.ServiceClass<Transport, "@cqbus/core/Transport", TransportShape> = Context.Service<
  Transport,
  TransportShape
>()("@cqbus/core/Transport")

/**
 * The `Transport` service: the port a backend layer provides and `EventBus.layer` consumes.
 *
 * @since 0.1.0
 * @category services
 */
export class Transport extends TransportKey {}

/**
 * Which dead letters an operation concerns: every field given must match, an absent field matches anything.
 *
 * @since 0.1.0
 * @category models
 */
export interface DeadLetterFilter {
  /** The original topic, or a pattern of topics (`*`, `>`). */
  readonly topic?: string
  /** The group that dead-lettered the message. */
  readonly group?: string
  /** The tag of the error that dead-lettered it (`"Reject"`, `"DecodeError"`, `"MaxDeliverExceeded"`, ...). */
  readonly errorTag?: string
  /** A piece of the reason, compared without regard to case. */
  readonly reasonContains?: string
  /** Dead-lettered at or after this time. */
  readonly from?: Date
  /** Dead-lettered before this time. */
  readonly to?: Date
}

/**
 * One page request of `DeadLetterStore.list`.
 *
 * @since 0.1.0
 * @category models
 */
export interface DeadLetterQuery extends DeadLetterFilter {
  /** The most records on the page. */
  readonly limit: number
  /** Where the page starts: the `next` of the previous page; absent for the first page. */
  readonly cursor?: string
}

/**
 * A dead letter as the store holds it: the record and its id.
 *
 * @since 0.1.0
 * @category models
 */
export interface DeadLetterEntry extends DeadLetter {
  /**
   * The record's id in the store, a decimal string: its sequence in the dead-letter stream (NATS), its position in
   * the memory store. Ids grow in the order records were stored and are never reused.
   */
  readonly id: string
  /** The stream that held the original message, where known. */
  readonly stream?: string
  /**
   * Set when the record was stored without the original body and headers (they did not fit): what was left out. Such
   * a record cannot be replayed from the store.
   */
  readonly omitted?: string
}

/**
 * A page of dead letters, oldest first.
 *
 * @since 0.1.0
 * @category models
 */
export interface DeadLetterPage {
  readonly items: ReadonlyArray<DeadLetterEntry>
  /**
   * Where the next page starts (pass it as `cursor`). Absent: nothing after this page matches. Present: there may be
   * more; a page may even be empty, since one page examines a bounded number of records.
   */
  readonly next?: string
}

/**
 * The dead-letter administration capability of a transport. `list` reads a bounded number of records per call (paging
 * by id); nothing reads the whole store at once. Failures are `DeadLetterError`s (`InvalidQuery` for a malformed id
 * or cursor, `Transport` when the broker cannot be asked).
 *
 * @since 0.1.0
 * @category models
 */
export interface DeadLetterStore {
  /** One page of the records matching the query, oldest first, at most `limit` of them. */
  readonly list: (query: DeadLetterQuery) => Effect.Effect<DeadLetterPage, DeadLetterError>
  /** One record by id; `undefined` when there is none. */
  readonly get: (id: string) => Effect.Effect<DeadLetterEntry | undefined, DeadLetterError>
  /** Removes records by id; the count removed (unknown ids are not counted). */
  readonly remove: (ids: ReadonlyArray<string>) => Effect.Effect<number, DeadLetterError>
  /** Removes every record the filter matches; the count removed. */
  readonly purge: (filter: DeadLetterFilter) => Effect.Effect<number, DeadLetterError>
}

/**
 * What one `fetch` asks for. The group is a durable consumer, the same one `consume` uses for that group name, so its
 * position, redeliveries and delivery counts are shared with subscriptions of the group.
 *
 * Contract: the transport takes what the group has to deliver (redeliveries that are due first, then new messages)
 * up to `max`, waiting up to `expires` for the batch to fill: a full batch returns at once, a partial one when
 * `expires` passes (empty when nothing came). A non-empty batch goes to `process` once; the transport applies the
 * i-th `Outcome` to the i-th message exactly as `consume` does (`Ack`, `Nak` with its delay, `DeadLetter` stored then
 * removed, `Handback` available again at once), hands back a message `process` gave no outcome for, and hands back
 * the whole batch when `process` is interrupted. While `process` runs, the transport keeps the batch from timing out.
 *
 * @since 0.1.0
 * @category models
 */
export interface FetchRequest {
  /** The topic or wildcard pattern (already validated). */
  readonly topic: string
  /** The durable group (consumer) to fetch for. */
  readonly group: string
  /** The most messages in one batch. */
  readonly max: number
  /** How long to wait for the batch to fill before returning what came. */
  readonly expires: Duration.Duration
  /** Where the group starts when it does not exist yet. */
  readonly deliverPolicy: DeliverPolicy
  /** The group's ack wait (see `ConsumeOptions.ackWait`), for a broker that redelivers what is not answered in time. */
  readonly ackWait: Duration.Duration
}
