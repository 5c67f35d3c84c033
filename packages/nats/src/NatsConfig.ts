/**
 * Configuration of the NATS backend: how to reach the server, which stream holds the events, what start-up may do to
 * it, where dead letters go, and the bus defaults. Defaults live in `resolveConfig`, in one place.
 *
 * @module
 */
import type { EventBusConfig, Persistence } from "@cqbus/core"
import type { NatsConnection } from "@nats-io/nats-core"
import { Duration, type Redacted, type Schedule } from "effect"
import type { NatsError } from "./NatsError.ts"

/**
 * The stream that stores the events. Field names follow the options users of JetStream know; unset fields keep the
 * server's defaults.
 *
 * @since 0.1.0
 * @category models
 */
export interface NatsStreamOptions {
  /** Default `CQC_EVENTS`, the stream CQC's Go services use. */
  readonly name?: string
  /** Default `["cqc.events.v1.>"]`. */
  readonly subjects?: ReadonlyArray<string>
  readonly retention?: "limits" | "interest" | "workqueue"
  readonly storage?: "file" | "memory"
  readonly maxAge?: Duration.Input
  readonly maxBytes?: number
  readonly maxMessages?: number
  readonly maxMessageSize?: number
  readonly maxMessagesPerSubject?: number
  readonly discard?: "old" | "new"
  readonly replicas?: number
  /** The dedupe window for `Nats-Msg-Id` (server default 2 minutes). */
  readonly duplicateWindow?: Duration.Input
}

/**
 * A stream beside the bus's main one (`NatsEventBusConfig.streams`): another stream of this service, which the bus
 * provisions like `stream`, or a stream another service owns that the bus only reads (`provisioning: "validateOnly"`:
 * it must exist and the fields set here must match; `"skip"`: no management call at all). Subscriptions to any topic
 * it captures consume from it; publishes reach it by their subject (JetStream routes them).
 *
 * @since 0.1.0
 * @category models
 */
export interface NatsStreamConfig extends NatsStreamOptions {
  /** The stream's name (required: there is no default beside the main stream's). */
  readonly name: string
  /**
   * The topics it captures. Needed to create it and, under `"skip"`, for routing; under `"validateOnly"` they are
   * compared when given and read from the server otherwise.
   */
  readonly subjects?: ReadonlyArray<string>
  /** What start-up does to this stream (default: the bus's `provisioning`). */
  readonly provisioning?: ProvisioningStrategy
}

/**
 * What start-up does to a stream (the bus's `provisioning`, or a stream's own in `streams`): `"createOrUpdate"`
 * (default) creates it or brings its configuration to the options (subjects only grow: the configured ones are added,
 * others the stream has are kept, such as topics added at run time); `"createOnly"` creates it when missing and
 * otherwise leaves it alone; `"validateOnly"` changes nothing and fails with the differences; `"skip"` makes no
 * management call at all. A subscription's group (durable consumer), whatever stream it reads, follows the bus's
 * strategy when it exists with other settings: updated (`"createOrUpdate"`), refused with a
 * `SubscribeError` naming each differing field (`"validateOnly"`, `"createOnly"`), or left as it is and followed
 * (`"skip"`); a missing one is always created (docs/wire-format.md, "A group that already exists").
 *
 * @since 0.1.0
 * @category models
 */
export type ProvisioningStrategy = "createOrUpdate" | "createOnly" | "validateOnly" | "skip"

/**
 * Configuration of `NatsEventBus.layer`. Every option is checked before connecting; one out of its range fails
 * start-up with `NatsError` reason `Config` naming it and the range (docs/reliability.md, "Options").
 *
 * @since 0.1.0
 * @category models
 */
export interface NatsEventBusConfig extends EventBusConfig {
  /** An open connection from any nats.js transport (Deno, WebSocket, ...). The bus does not close it. */
  readonly connection?: NatsConnection
  /** Servers to connect to with `@nats-io/transport-node` when no connection is given (default `NATS_URL` or localhost). */
  readonly servers?: string | ReadonlyArray<string>
  /** The client name shown by the server (default: the bus `source`). */
  readonly name?: string
  readonly user?: string
  readonly password?: Redacted.Redacted<string>
  readonly token?: Redacted.Redacted<string>
  /** An NKey seed (`SU...`). */
  readonly nkeySeed?: Redacted.Redacted<string>
  /** Path of a `.creds` file (JWT + seed). */
  readonly credsFile?: string
  /** TLS: `true` requires TLS with the system CAs; an object passes files. */
  readonly tls?: boolean | { readonly caFile?: string; readonly certFile?: string; readonly keyFile?: string }
  /**
   * The first connection. By default start-up fails at once (`NatsError` with reason `Connect`) when no server
   * answers; with `retry` it tries again on that schedule (each failure logs a warning) and fails only once the
   * schedule is done, e.g. `Schedule.spaced("2 seconds").pipe(Schedule.upTo({ times: 30 }))`. Only unreachable servers
   * (reason `Connect`) are retried; refused credentials (`Authentication`), a failed TLS handshake (`Tls`) and
   * unreadable credentials (`Config`) fail at once, whatever the schedule. Once connected, `reconnect` applies (nats.js
   * closes the connection when a reconnect is refused twice for the same authentication reason). `timeout` bounds one
   * attempt (default 20 seconds, nats.js's): a server that requires a client certificate refuses a client without
   * one inside the TLS handshake, and the client notices only when its attempt times out.
   */
  readonly connect?: { readonly retry?: Schedule.Schedule<unknown, NatsError>; readonly timeout?: Duration.Input }
  /** Reconnect policy (default: forever, 250 ms apart with jitter). */
  readonly reconnect?: {
    readonly maxAttempts?: number
    readonly wait?: Duration.Input
    readonly jitter?: Duration.Input
  }
  /** The bus's main stream: where it publishes by default and where topics configured at run time are added. */
  readonly stream?: NatsStreamOptions
  /**
   * More streams: the service's own (provisioned like `stream`) and other services' streams it reads
   * (`provisioning: "validateOnly"` or `"skip"`). Names are unique and the subjects of `stream` and `streams` must
   * not overlap (checked before connecting). A subscription consumes from the stream that captures its topic: one of
   * these, else the one the server knows (docs/operations.md, "Streams").
   */
  readonly streams?: ReadonlyArray<NatsStreamConfig>
  /** What start-up does to the streams (default `"createOrUpdate"`); a stream in `streams` may set its own. */
  readonly provisioning?: ProvisioningStrategy
  /**
   * The persistence of topics that `topics` (or `bus.topics.configure`) does not name (default `"persistent"`):
   * `"ephemeral"` sends them over core NATS (except topics one of the bus's streams captures: those would be stored
   * anyway, so they stay persistent), `"auto"` stores them when the server has JetStream. With `"ephemeral"` or
   * `"auto"` the bus also starts on a server without JetStream; topics configured persistent then fail to publish and
   * subscribe, and dead letters can only be logged (docs/operations.md, "Topics and persistence").
   */
  readonly persistence?: Persistence
  /**
   * The stream dead letters go to (default `CQC_DLQ` on subjects `cqbus.dlq.>`, created if missing unless
   * `provisioning` is `"skip"`). `replicas` and `storage` default to the event stream's (`stream.replicas`,
   * `stream.storage`), so on a cluster dead letters are as safe as the events; `"validateOnly"` reports an existing
   * dead-letter stream whose replicas or storage differ.
   */
  readonly deadLetters?: {
    readonly stream?: string
    readonly subjectPrefix?: string
    readonly maxAge?: Duration.Input
    readonly replicas?: number
    readonly storage?: "file" | "memory"
  }
  /**
   * The small stream that captures the health heartbeat's probes (`@cqbus/health`'s default topic
   * `cqbus.health.v1.probe`), apart from the events so the heartbeat works whatever `stream.subjects` is and consumers
   * of the events never see probes. Default `CQBUS_HEALTH` on `cqbus.health.>`, memory storage, kept one minute, as
   * many replicas as the event stream (`stream.replicas`); created if missing under `createOrUpdate` and
   * `createOnly`, left alone under `validateOnly` and `skip`.
   */
  readonly health?: { readonly stream?: string; readonly subjectPrefix?: string }
  /**
   * How long a publish waits for its PubAck (default 5 s), any wait for a free slot (`maxPendingPublishes`) or for a
   * reconnect included; then it fails `Timeout` or `NotConnected`, both retriable.
   */
  readonly publishTimeout?: Duration.Input
  /**
   * How many publishes may await their PubAck at once on this bus's connection (default 4096); further publishes
   * wait for a slot, within their `publishTimeout`.
   */
  readonly maxPendingPublishes?: number
  /** How long `check` may take (default 2 s). */
  readonly checkTimeout?: Duration.Input
}

/** A stream of the configuration with its provisioning strategy decided. */
export interface ResolvedStream extends NatsStreamConfig {
  readonly provisioning: ProvisioningStrategy
}

/** The configuration with every default applied. */
export interface ResolvedConfig {
  readonly stream: NatsStreamOptions & { readonly name: string; readonly subjects: ReadonlyArray<string> }
  /** `config.streams`, each with its strategy (the bus's unless it sets one). */
  readonly streams: ReadonlyArray<ResolvedStream>
  readonly deadLetterStream: string
  readonly deadLetterPrefix: string
  readonly deadLetterMaxAge: Duration.Input | undefined
  readonly deadLetterReplicas: number | undefined
  readonly deadLetterStorage: "file" | "memory" | undefined
  readonly healthStream: string
  readonly healthPrefix: string
  readonly provisioning: ProvisioningStrategy
  readonly persistence: Persistence
  readonly publishTimeout: number
  readonly maxPendingPublishes: number
  readonly checkTimeout: number
}

/** Applies the defaults. */
export const resolveConfig = (config: NatsEventBusConfig): ResolvedConfig => {
  const provisioning = config.provisioning ?? "createOrUpdate"
  return {
    stream: { ...config.stream, name: config.stream?.name ?? "CQC_EVENTS", subjects: config.stream?.subjects ?? ["cqc.events.v1.>"] },
    streams: (config.streams ?? []).map((s) => ({ ...s, provisioning: s.provisioning ?? provisioning })),
    deadLetterStream: config.deadLetters?.stream ?? "CQC_DLQ",
    deadLetterPrefix: config.deadLetters?.subjectPrefix ?? "cqbus.dlq",
    deadLetterMaxAge: config.deadLetters?.maxAge,
    deadLetterReplicas: config.deadLetters?.replicas ?? config.stream?.replicas,
    deadLetterStorage: config.deadLetters?.storage ?? config.stream?.storage,
    healthStream: config.health?.stream ?? "CQBUS_HEALTH",
    healthPrefix: config.health?.subjectPrefix ?? "cqbus.health",
    provisioning,
    persistence: config.persistence ?? "persistent",
    publishTimeout: Duration.toMillis(config.publishTimeout ?? "5 seconds"),
    maxPendingPublishes: Math.max(1, Math.floor(config.maxPendingPublishes ?? 4096)),
    checkTimeout: Duration.toMillis(config.checkTimeout ?? "2 seconds")
  }
}
