/**
 * A subscription's consumer on the server: the configuration it asks for, reconciling an existing consumer (a durable
 * group, or an ephemeral consumer) with it under the provisioning strategy, the settings actually in force on the
 * server, and the handle the pull loop uses to look at the consumer and recreate it. A group can
 * pre-exist from an older deploy, a Go service or an ops script; running it with settings other than the ones asked
 * for handed one message to two handler runs at once (its old `ack_wait` expired under a running handler), so a
 * difference is either updated away or refused by name, never silently kept (issue 10, item 1).
 *
 * What nats-server 2.9 lets an update change (checked against 2.9.10): `ack_wait`, `max_deliver`, `backoff`,
 * `max_ack_pending` and `filter_subject`; `deliver_policy` (with its start sequence or time) is refused (API error
 * 10012). A group's topic is its identity, so a different `filter_subject` is refused too, under every strategy.
 */
import { SubscribeError } from "@cqbus/core"
import { type ConsumeOptions } from "@cqbus/core/backend"
import { AckPolicy, type ConsumerConfig, DeliverPolicy, type JetStreamManager, ReplayPolicy } from "@nats-io/jetstream"
import { nanos, type NatsConnection } from "@nats-io/nats-core"
import { Duration, Effect, type Scope } from "effect"
import type { ProvisioningStrategy } from "../NatsConfig.ts"
import { ApiCodes, isNotFound, toSubscribeError } from "./errors.ts"
import { differences } from "./provision.ts"

/**
 * Fields compared with an existing consumer, in the order they are reported, each with what a difference means:
 * `update`, an update can change it (nats-server 2.9; `metadata` from 2.10, where it exists); `start`, the start
 * position, which the server cannot change (refused with advice about the start); `fixed`, refused otherwise (the
 * server cannot change it, or, for `filter_subject`, a group's topic is its identity).
 */
const FIELDS = {
  filter_subject: "fixed",
  deliver_policy: "start",
  opt_start_seq: "start",
  opt_start_time: "start",
  ack_policy: "fixed",
  replay_policy: "fixed",
  ack_wait: "update",
  max_deliver: "update",
  backoff: "update",
  max_ack_pending: "update",
  description: "update",
  metadata: "update"
} as const

const COMPARED = Object.keys(FIELDS) as ReadonlyArray<keyof typeof FIELDS>

/** The field a difference line (`field: have → want`) is about. */
const kindOf = (line: string): "fixed" | "start" | "update" | undefined =>
  (FIELDS as Record<string, "fixed" | "start" | "update">)[line.slice(0, line.indexOf(":"))]

/** The first nats-server version that keeps consumer `metadata` (2.9 accepts the field and drops it). */
const METADATA_SINCE: readonly [number, number] = [2, 10]

/** `true` when the server (its `INFO` version, e.g. `2.9.10`) keeps consumer metadata. */
export const keepsMetadata = (version: string | undefined): boolean => {
  const [major = 0, minor = 0] = (version ?? "").split(".").map((part) => Number.parseInt(part, 10))
  return major > METADATA_SINCE[0] || (major === METADATA_SINCE[0] && minor >= METADATA_SINCE[1])
}

type Compared = Partial<Record<(typeof COMPARED)[number], unknown>>

/** What one subscription needs to know about its consumer. */
interface ConsumerRequest {
  readonly stream: string
  readonly name: string
  readonly topic: string
  readonly group: string | undefined
  /** The full configuration the subscription asks for (deliver policy included). */
  readonly want: Partial<ConsumerConfig>
  readonly strategy: ProvisioningStrategy
  /** `maxAckPending` was given: compared as asked, not as a ceiling (see `compare`). */
  readonly exactAckPending: boolean
  /**
   * The consumer is being recreated after the server lost it, from the oldest unsettled sequence: a consumer another
   * member recreated first starts at its own floor, so the start position is not compared.
   */
  readonly recreating?: boolean
}

/** The settings in force on the server, as the pull loop uses them. */
export interface ConsumerSettings {
  readonly config: ConsumerConfig
  /**
   * The shortest time the server waits for a sign of life before redelivering, in ms: `ack_wait`, or the shortest
   * `backoff` step when the consumer has one (the server then times deliveries by the steps).
   */
  readonly ackWait: number
  /** The server's `max_deliver` when it is finite: after that many deliveries the server gives up on a message. */
  readonly maxDeliver: number | undefined
  /** The consumer's `max_batch`, when it has one: no pull asks for more (the server refuses it, 409). */
  readonly maxBatch: number | undefined
  /** The consumer's `max_expires` in ms, when it has one: no pull waits longer. */
  readonly maxExpires: number | undefined
  /** The consumer's `ack_policy` is `none`: nothing is answered; every delivery is the only one. */
  readonly ackNone: boolean
}

/** The settings of a consumer's configuration. */
const settingsOf = (config: ConsumerConfig): ConsumerSettings => {
  const steps = (config.backoff ?? []).filter((step) => step > 0)
  const ackWait = Math.min(config.ack_wait ?? 30_000_000_000, ...steps) / 1_000_000
  return {
    config,
    ackWait,
    maxDeliver: config.max_deliver !== undefined && config.max_deliver > 0 ? config.max_deliver : undefined,
    // A group created elsewhere (a Go service sharing it) may limit pulls.
    maxBatch: config.max_batch !== undefined && config.max_batch > 0 ? config.max_batch : undefined,
    maxExpires: config.max_expires !== undefined && config.max_expires > 0
      ? Math.floor(config.max_expires / 1_000_000)
      : undefined,
    ackNone: config.ack_policy === AckPolicy.None
  }
}

const NANOS = new Set(["ack_wait", "backoff"])

/** A value as the differences show it: durations as `2s`, an absent backoff as `none`, the rest as JSON. */
const show = (field: string, value: unknown): string => {
  if (field === "backoff" && (value === undefined || (Array.isArray(value) && value.length === 0))) return "none"
  const duration = (n: unknown) =>
    typeof n === "number" ? Duration.format(Duration.millis(n / 1_000_000)) : JSON.stringify(n)
  if (NANOS.has(field)) return Array.isArray(value) ? `[${value.map(duration).join(", ")}]` : duration(value)
  // Already canonical JSON (see `comparable`), or absent.
  if (field === "metadata") return typeof value === "string" ? value : "none"
  if (field === "description" && value === undefined) return "none"
  return JSON.stringify(value)
}

/** The compared fields of a configuration, normalised so that equal settings compare equal. */
const comparable = (config: Partial<ConsumerConfig>): Compared => {
  const policy = config.deliver_policy ?? DeliverPolicy.All
  return {
    filter_subject: config.filter_subject,
    deliver_policy: policy,
    opt_start_seq: policy === DeliverPolicy.StartSequence ? config.opt_start_seq : undefined,
    // The server reports the time with its own precision and zone: compare instants.
    opt_start_time: policy === DeliverPolicy.StartTime && config.opt_start_time !== undefined
      ? new Date(config.opt_start_time).toISOString()
      : undefined,
    ack_policy: config.ack_policy ?? AckPolicy.Explicit,
    replay_policy: config.replay_policy ?? ReplayPolicy.Instant,
    ack_wait: config.ack_wait,
    max_deliver: config.max_deliver ?? -1,
    backoff: config.backoff ?? [],
    // Without acks there is nothing pending: the server's value is not the subscription's concern.
    max_ack_pending: config.ack_policy === AckPolicy.None ? undefined : config.max_ack_pending,
    description: config.description === "" ? undefined : config.description,
    metadata: canonicalMetadata(config.metadata)
  }
}

/**
 * Metadata as one comparable string with sorted keys, without the server's own `_nats.*` entries (2.11+ adds them);
 * `undefined` for none.
 */
const canonicalMetadata = (metadata: Readonly<Record<string, string>> | undefined): string | undefined => {
  const entries = Object.entries(metadata ?? {}).filter(([key]) => !key.startsWith("_nats.")).sort(([a], [b]) =>
    a < b ? -1 : a > b ? 1 : 0
  )
  return entries.length === 0 ? undefined : JSON.stringify(Object.fromEntries(entries))
}

/**
 * The fields where the existing consumer differs from the wanted one, split into those an update can change and those
 * it cannot.
 */
const compare = (
  have: Partial<ConsumerConfig>,
  want: Partial<ConsumerConfig>,
  options: { readonly recreating?: boolean; readonly exactAckPending?: boolean } = {}
): { readonly updatable: ReadonlyArray<string>; readonly fixed: ReadonlyArray<string> } => {
  const a = comparable(have)
  const b = comparable(want)
  // The default `max_ack_pending` is a ceiling: more room than asked (or none, -1) is not a difference, and members of
  // one group with different concurrency must not take turns lowering it. A `maxAckPending` the subscription gives is
  // a setting like any other.
  if (
    options.exactAckPending !== true &&
    (a.max_ack_pending === -1 || (a.max_ack_pending as number) >= (b.max_ack_pending as number))
  ) {
    b.max_ack_pending = a.max_ack_pending
  }
  // Metadata the subscription does not send (a server before 2.10, see `setUpConsumer`) is not compared.
  if (want.metadata === undefined) b.metadata = a.metadata
  // A group has a position already: cqbus recreates a lost consumer from its oldest unsettled sequence, so a group
  // that starts at a sequence continues what "all" began. Any other start differs.
  const continues = a.deliver_policy === DeliverPolicy.StartSequence && b.deliver_policy === DeliverPolicy.All
  if (options.recreating === true || continues) {
    b.deliver_policy = a.deliver_policy
    b.opt_start_seq = a.opt_start_seq
    b.opt_start_time = a.opt_start_time
  }
  const wanted: Compared = {}
  for (const field of COMPARED) wanted[field] = b[field]
  const diff = differences<Compared>(a, wanted, show)
  return {
    updatable: diff.filter((line) => kindOf(line) === "update"),
    fixed: diff.filter((line) => kindOf(line) !== "update")
  }
}

const where = (request: ConsumerRequest) =>
  `${request.group === undefined ? "consumer" : "group"} ${request.name} on stream ${request.stream}`

/** A difference nats-server cannot update: refused under every strategy, with what the user can do. */
const refuseFixed = (request: ConsumerRequest, have: ConsumerConfig, fixed: ReadonlyArray<string>): SubscribeError => {
  const { group, topic } = request
  if (have.filter_subject !== request.want.filter_subject) {
    return new SubscribeError({
      topic,
      group,
      reason: "GroupConflict",
      message: `group ${request.name} already consumes ${have.filter_subject} on ${request.stream}; one group cannot ` +
        `also consume ${topic} (${fixed.join("; ")}). Give each topic its own group name`
    })
  }
  if (fixed.some((line) => kindOf(line) !== "start")) {
    return new SubscribeError({
      topic,
      group,
      reason: "GroupConflict",
      message: `${where(request)} was created with settings nats-server cannot change on an existing consumer: ` +
        `${fixed.join("; ")}. Subscribe with the group's settings, delete the consumer (nats consumer rm ` +
        `${request.stream} ${request.name}; the group loses its position), or use another group name`
    })
  }
  return new SubscribeError({
    topic,
    group,
    reason: "GroupConflict",
    message: `${where(request)} was created with another start position than the subscription asks for: ` +
      `${fixed.join("; ")}. nats-server cannot change it on an existing consumer: subscribe with the group's ` +
      `deliverPolicy, delete the consumer (nats consumer rm ${request.stream} ${request.name}; the group loses its ` +
      `position), or use another group name`
  })
}

/**
 * Makes sure the consumer exists and runs with the settings asked for, as the strategy allows, and returns the settings
 * in force on the server.
 *
 * - Missing: created with the wanted configuration, under every strategy (a subscription cannot run without it).
 * - `createOrUpdate`: differing updatable fields are updated.
 * - `validateOnly`, `createOnly`: any difference fails with a `SubscribeError` naming each field.
 * - `skip`: no update; the consumer runs with the server's settings, which the pull consumer follows (keep-alives from
 *   its `ack_wait`, dead letters at its `max_deliver`), and a warning names the differences.
 * - A difference the server cannot update (start position) or a different topic fails under every strategy.
 */
const ensureConsumer = (
  jsm: JetStreamManager,
  request: ConsumerRequest
): Effect.Effect<ConsumerSettings, SubscribeError> =>
  Effect.tryPromise({
    try: async (): Promise<{ readonly settings: ConsumerSettings; readonly warning?: string }> => {
      const { name, stream, strategy, want } = request
      let have: ConsumerConfig
      try {
        have = (await jsm.consumers.info(stream, name)).config
      } catch (cause) {
        if (!isNotFound(cause, ApiCodes.ConsumerNotFound)) throw cause
        return { settings: settingsOf((await jsm.consumers.add(stream, want)).config) }
      }
      const { fixed, updatable } = compare(have, want, request)
      if (fixed.length > 0) throw refuseFixed(request, have, fixed)
      if (updatable.length === 0) return { settings: settingsOf(have) }
      if (strategy === "validateOnly" || strategy === "createOnly") {
        throw new SubscribeError({
          topic: request.topic,
          group: request.group,
          reason: "GroupConflict",
          message: `${where(request)} differs from the subscription (provisioning: ${strategy}): ${updatable.join("; ")}. ` +
            `Update the consumer, subscribe with its settings, or use provisioning "createOrUpdate"`
        })
      }
      if (strategy === "skip") {
        return {
          settings: settingsOf(have),
          warning: `cqbus: ${where(request)} differs from the subscription and is left as it is (provisioning: skip); ` +
            `running with the server's settings: ${updatable.join("; ")}`
        }
      }
      // nats.js merges the update into the consumer's current configuration: an empty backoff clears one. The server
      // requires max_deliver > the number of backoff steps, so both change in one update.
      const room = have.max_ack_pending
      const update: Partial<ConsumerConfig> = {
        max_deliver: want.max_deliver ?? -1,
        backoff: want.backoff ?? []
      }
      if (want.ack_wait !== undefined) update.ack_wait = want.ack_wait
      // The default is a ceiling only ever raised (see `compare`); a given `maxAckPending` is set as asked.
      if (
        want.max_ack_pending !== undefined &&
        (request.exactAckPending || (room !== -1 && (room === undefined || room < want.max_ack_pending)))
      ) {
        update.max_ack_pending = want.max_ack_pending
      }
      // nats.js merges the update into the current configuration: an empty value clears one.
      update.description = want.description ?? ""
      if (want.metadata !== undefined || have.metadata !== undefined) update.metadata = want.metadata ?? {}
      return { settings: settingsOf((await jsm.consumers.update(stream, name, update)).config) }
    },
    catch: (cause) =>
      cause instanceof SubscribeError ? cause : toSubscribeError(cause, request.topic, request.group, request.stream)
  }).pipe(
    Effect.tap(({ warning }) => warning === undefined ? Effect.void : Effect.logWarning(warning)),
    Effect.map(({ settings }) => settings)
  )

const deliverPolicyConfig = (policy: ConsumeOptions["deliverPolicy"]): Partial<ConsumerConfig> =>
  policy === "all"
    ? { deliver_policy: DeliverPolicy.All }
    : policy === "new"
    ? { deliver_policy: DeliverPolicy.New }
    : policy === "last"
    ? { deliver_policy: DeliverPolicy.Last }
    : policy === "lastPerSubject"
    ? { deliver_policy: DeliverPolicy.LastPerSubject }
    : "fromSequence" in policy
    ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: policy.fromSequence }
    : { deliver_policy: DeliverPolicy.StartTime, opt_start_time: policy.fromTime.toISOString() }

/** The consumer as the pull loop sees it once it runs. */
export interface ServerConsumer {
  /**
   * Makes sure the consumer exists, creating it from `floor` (the oldest unsettled stream sequence) when the server
   * lost it; `undefined` when nothing was delivered yet: create it as first configured. Returns the settings now in
   * force, which the keep-alives and dead letters follow from then on.
   */
  readonly recreate: (floor: number | undefined) => Effect.Effect<ConsumerSettings, SubscribeError>
  /** `true` when the server no longer has the consumer. */
  readonly missing: Effect.Effect<boolean>
  /** The consumer's ack floor (stream sequence) as the server reports it; `undefined` when it cannot be read. */
  readonly ackFloor: Effect.Effect<number | undefined>
}

/** What one subscription asks of its consumer. */
export interface ConsumerSetup {
  readonly nc: NatsConnection
  readonly jsm: JetStreamManager
  readonly stream: string
  /** The group name, or a fresh name for an ephemeral consumer. */
  readonly name: string
  readonly strategy: ProvisioningStrategy
  readonly options: ConsumeOptions
}

/**
 * Sets up the consumer of one subscription (created, reconciled or refused, see `ensureConsumer`) and returns the
 * settings in force on the server with the handle the pull loop needs. An ephemeral consumer is deleted when the
 * scope closes.
 */
export const setUpConsumer = (
  setup: ConsumerSetup
): Effect.Effect<{ readonly settings: ConsumerSettings; readonly server: ServerConsumer }, SubscribeError, Scope.Scope> =>
  Effect.gen(function*() {
    const { jsm, name, nc, options, stream } = setup
    const { group, topic } = options
    const ackNone = options.ackPolicy === "none"
    const metadata = options.metadata !== undefined && keepsMetadata(nc.info?.version) ? options.metadata : undefined
    if (options.metadata !== undefined && metadata === undefined) {
      // nats-server before 2.10 accepts the field and drops it: say so once per subscription rather than pretend.
      yield* Effect.logWarning(
        `cqbus: ${group === undefined ? "the consumer" : `group ${name}`} of ${topic} runs without its metadata: ` +
          `nats-server ${nc.info?.version ?? "(unknown version)"} does not keep consumer metadata (2.10 or later does)`
      )
    }
    const base: Partial<ConsumerConfig> = {
      ack_policy: ackNone ? AckPolicy.None : AckPolicy.Explicit,
      replay_policy: options.replay === "original" ? ReplayPolicy.Original : ReplayPolicy.Instant,
      filter_subject: topic,
      ack_wait: nanos(Duration.toMillis(options.ackWait)),
      // The bus dead-letters after `maxDeliver` itself, with the reason; the server must never give up silently.
      max_deliver: -1,
      ...(ackNone ? {} : { max_ack_pending: options.maxAckPending ?? Math.max(1000, options.maxInFlight * 4) }),
      ...(options.description === undefined ? {} : { description: options.description }),
      ...(metadata === undefined ? {} : { metadata: { ...metadata } }),
      ...(group === undefined
        ? {
          name,
          inactive_threshold: nanos(options.inactiveThreshold === undefined ? 60_000 : Duration.toMillis(options.inactiveThreshold))
        }
        : { durable_name: name })
    }
    const exactAckPending = options.maxAckPending !== undefined
    /** The consumer on the server, created from `start` when it does not exist, reconciled when it does. */
    const ensure = (start: Partial<ConsumerConfig>, recreating = false) =>
      ensureConsumer(jsm, {
        stream,
        name,
        topic,
        group,
        want: { ...base, ...start },
        strategy: setup.strategy,
        exactAckPending,
        recreating
      })
    const settings = yield* ensure(deliverPolicyConfig(options.deliverPolicy))
    // Registered before the pull loop, so it runs after the loop's drain: an ephemeral consumer is deleted only once
    // its deliveries are settled.
    if (group === undefined) {
      yield* Effect.addFinalizer(() =>
        nc.isClosed() ? Effect.void : Effect.promise(() => jsm.consumers.delete(stream, name).catch(() => false))
      )
    }
    const server: ServerConsumer = {
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
      )
    }
    return { settings, server }
  })
