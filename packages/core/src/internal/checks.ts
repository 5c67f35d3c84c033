/**
 * The accepted ranges of the bus's own options (`EventBusConfig`, `SubscribeOptions`, `PublishOptions`, `publishAll`)
 * in one place, written with the shared checks of `Options.ts`. Ranges follow what NATS stores where an option is
 * passed on to the server, and a bound that keeps memory and timers sane everywhere else.
 */
import * as Options from "../Options.ts"
import { checkSettings } from "../TopicConfig.ts"

/** The accepted ranges of the numeric subscription options (docs/reliability.md, "Options"). */
const SubscribeRanges = {
  concurrency: { min: 1, max: 10_000 },
  maxBuffered: { min: 1, max: 1_000_000 },
  maxDeliver: { min: 1, max: 10_000 },
  // NATS keeps an unacknowledged delivery for `ack_wait`; cqbus sends keep-alives at a fraction of it, so below 100 ms
  // it would mostly send keep-alives.
  ackWait: { min: "100 millis", max: "1 days" },
  drainTimeout: Options.Ranges.drain,
  maxAckPending: { min: 1, max: 10_000_000 },
  // The pull request lives a few heartbeats; below 100 ms the heartbeats would be most of the traffic.
  idleHeartbeat: { min: "100 millis", max: "1 minutes" },
  // Shorter than a few pull heartbeats, the server could drop a consumer that is only between two pulls.
  inactiveThreshold: { min: "1 seconds", max: "7 days" }
} as const

/** How many publishes `publishAll` may keep awaiting their acknowledgement at once. */
export const WindowRange: { readonly min: number; readonly max: number } = { min: 1, max: 65_536 } as const

const deliverPolicy = (option: string, value: unknown): Options.Check => {
  if (value === undefined || value === "all" || value === "new" || value === "last" || value === "lastPerSubject") {
    return undefined
  }
  const rule = `${option} must be "all", "new", "last", "lastPerSubject", { fromSequence: 1 to ${Options.MAX_COUNT} } ` +
    `or { fromTime: a valid Date }`
  if (typeof value === "object" && value !== null) {
    if ("fromSequence" in value) {
      return Options.integer(`${option}.fromSequence`, value.fromSequence, { min: 1, max: Options.MAX_COUNT })
    }
    if ("fromTime" in value) {
      return value.fromTime instanceof Date && Number.isFinite(value.fromTime.getTime())
        ? undefined
        : { option: `${option}.fromTime`, message: `${rule}, got an invalid date` }
    }
  }
  return { option, message: `${rule}, got ${Options.show(value)}` }
}

/**
 * The subscription options that may also be bus-wide defaults (`EventBusConfig.subscribe`), each named with `prefix`.
 * `options` is `unknown` on purpose: the checks must hold for whatever a JavaScript caller passes.
 */
const sharedSubscribe = (options: Record<string, unknown>, prefix: string): Options.Check =>
  Options.first(
    () => Options.integer(`${prefix}concurrency`, options.concurrency, SubscribeRanges.concurrency),
    () => Options.integer(`${prefix}maxBuffered`, options.maxBuffered, SubscribeRanges.maxBuffered),
    () => Options.integer(`${prefix}maxDeliver`, options.maxDeliver, SubscribeRanges.maxDeliver),
    () => Options.oneOf(`${prefix}ordering`, options.ordering, ["none", "key"]),
    () => Options.func(`${prefix}backoff`, options.backoff),
    () => Options.duration(`${prefix}ackWait`, options.ackWait, SubscribeRanges.ackWait),
    () => Options.duration(`${prefix}drainTimeout`, options.drainTimeout, SubscribeRanges.drainTimeout),
    () => Options.boolean(`${prefix}internal`, options.internal),
    () => Options.integer(`${prefix}maxAckPending`, options.maxAckPending, SubscribeRanges.maxAckPending),
    () => Options.duration(`${prefix}idleHeartbeat`, options.idleHeartbeat, SubscribeRanges.idleHeartbeat),
    () => Options.duration(`${prefix}inactiveThreshold`, options.inactiveThreshold, SubscribeRanges.inactiveThreshold)
  )

/** Checks the options of one `subscribe`/`subscribeRaw`. */
export const checkSubscribeOptions = (options: unknown): Options.Check =>
  Options.fields("options", options, (o) =>
    Options.first(
      () => Options.name("group", o.group),
      () => sharedSubscribe(o, ""),
      () => deliverPolicy("deliverPolicy", o.deliverPolicy),
      () => Options.oneOf("replay", o.replay, ["instant", "original"]),
      () => Options.oneOf("ackPolicy", o.ackPolicy, ["explicit", "none"]),
      // nats-server keeps up to 4 KiB of description (JSMaxDescriptionLen).
      () => Options.text("description", o.description, { maxLength: 4096 }),
      () => Options.record("metadata", o.metadata, (option, value) => Options.text(option, value, { maxLength: 4096 })),
      // A group lives until it is deleted: the server's inactivity clean-up is for consumers nobody names.
      () =>
        o.group !== undefined && o.inactiveThreshold !== undefined
          ? {
            option: "inactiveThreshold",
            message: "inactiveThreshold applies to subscriptions without a group; a group's consumer is kept until it is " +
              "deleted"
          }
          : undefined
    )
  )

/** Checks the options of one `Fetch.batch`/`Fetch.each` (docs/operations.md, "Fetch batches"). */
export const checkFetchOptions = (options: unknown): Options.Check =>
  Options.fields("options", options, (o) =>
    Options.first(
      () =>
        o.group === undefined
          ? { option: "group", message: "group is required: a fetch reads for a durable group" }
          : Options.name("group", o.group),
      // A batch is held in memory whole; NATS's own pull batches are of this order.
      () => Options.integer("max", o.max, { min: 1, max: 10_000 }),
      () => Options.duration("expires", o.expires, { min: "1 millis", max: "1 hours" }),
      () => Options.integer("maxDeliver", o.maxDeliver, SubscribeRanges.maxDeliver),
      () => Options.func("backoff", o.backoff),
      () => Options.duration("ackWait", o.ackWait, SubscribeRanges.ackWait),
      () => Options.integer("concurrency", o.concurrency, SubscribeRanges.concurrency),
      () => Options.boolean("logFailures", o.logFailures),
      () => deliverPolicy("deliverPolicy", o.deliverPolicy)
    )
  )

const functions = (option: string, value: unknown): Options.Check => Options.list(option, value, Options.func)

/** Checks a bus configuration (`EventBus.layer`, and the shared part of every backend's configuration). */
export const checkEventBusConfig = (config: unknown): Options.Check =>
  Options.fields("config", config, (c) =>
    Options.first(
      // The CloudEvents `source` travels in a header: one line.
      () => Options.text("source", c.source, { maxLength: 1024 }),
      () => Options.object("subscribe", c.subscribe),
      () => sharedSubscribe((c.subscribe ?? {}) as Record<string, unknown>, "subscribe."),
      () => functions("middleware", c.middleware),
      () => functions("publishMiddleware", c.publishMiddleware),
      () => Options.boolean("logFailures", c.logFailures),
      () => Options.record("topics", c.topics, checkSettings)
    )
  )

/** Checks the options of one publish (`publish`, `publishRaw`, each item of `publishAll`). */
export const checkPublishOptions = (options: unknown): Options.Check =>
  Options.fields("options", options, (o) =>
    Options.first(
      // Both travel in headers (`ce-id` and `Nats-Msg-Id`, `ce-correlationid`): one line each.
      () => Options.text("eventId", o.eventId, { maxLength: 1024 }),
      () => Options.text("correlationId", o.correlationId, { maxLength: 1024 }),
      () => Options.text("type", o.type, { maxLength: 1024 }),
      // An empty key is the event definition's business (`allowEmptyKey`); any other key is one line.
      () => o.key === "" ? undefined : Options.text("key", o.key, { maxLength: 4096 }),
      () => Options.object("headers", o.headers),
      () => Options.boolean("internal", o.internal)
    )
  )
