/**
 * The accepted range of every option of `NatsEventBusConfig`, checked before anything connects, so a bad option fails
 * start-up with `NatsError` reason `Config` naming it instead of reaching the server (as a `Transport` error, or worse,
 * silently: `ackWait: -5000` written as -5 s, `maxPendingPublishes: NaN` making every publish time out). Ranges follow
 * what nats-server stores where an option is passed on (names, counts, durations as int64 nanoseconds).
 */
import { checkEventBusConfig, Options } from "@cqbus/core/backend"
import { TopicConfig } from "@cqbus/core"
import { Redacted, Schedule } from "effect"
import { type NatsEventBusConfig, type ResolvedConfig, resolveConfig } from "../NatsConfig.ts"
import { NatsError } from "../NatsError.ts"
import { overlaps } from "./subjects.ts"

type Check = Options.Check
type Bag = Record<string, unknown>

/** NATS's "unlimited" for stream limits. */
const UNLIMITED = [-1]

/** The accepted ranges (docs/reliability.md, "Options"). */
const NatsRanges = {
  maxPendingPublishes: { min: 1, max: 1_000_000 },
  reconnectAttempts: { min: 0, max: 1_000_000, also: UNLIMITED },
  reconnectWait: { min: "1 millis", max: "1 hours" },
  connectTimeout: { min: "10 millis", max: "10 minutes" },
  reconnectJitter: { min: 0, max: "1 hours" },
  // nats-server refuses a max_age below 100 ms; 100 years is far inside its int64 nanoseconds.
  maxAge: { min: "100 millis", max: "36500 days" },
  duplicateWindow: { min: "100 millis", max: "7 days" },
  count: { min: 1, max: Options.MAX_COUNT, also: UNLIMITED },
  // max_msg_size is an int32 on the server.
  maxMessageSize: { min: 1, max: 2_147_483_647, also: UNLIMITED },
  // JetStream replicates a stream on at most 5 servers.
  replicas: { min: 1, max: 5 }
} as const

/** A secret must arrive as `Redacted`: a plain string would be printed by accident somewhere, and is never shown here. */
const redacted = (option: string, value: unknown): Check =>
  value === undefined || Redacted.isRedacted(value)
    ? undefined
    : { option, message: `${option} must be a Redacted string (Redacted.make(...)), got ${typeof value === "string" ? "a plain string" : Options.show(value)}` }

/** Server URLs may carry credentials: the check never shows the value. */
const servers = (value: unknown): Check => {
  if (value === undefined) return undefined
  const list: ReadonlyArray<unknown> = Array.isArray(value) ? value : [value]
  if (list.length === 0) return { option: "servers", message: "servers must be a URL or a non-empty list of URLs, got an empty list" }
  for (let i = 0; i < list.length; i++) {
    const found = Options.text(Array.isArray(value) ? `servers[${i}]` : "servers", list[i], { secret: true })
    if (found !== undefined) return found
  }
  return undefined
}

const tls = (value: unknown): Check => {
  if (value === undefined || typeof value === "boolean") return undefined
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return { option: "tls", message: `tls must be true, false or { caFile, certFile, keyFile }, got ${Options.show(value)}` }
  }
  const files = value as Bag
  return Options.first(
    () => Options.text("tls.caFile", files.caFile),
    () => Options.text("tls.certFile", files.certFile),
    () => Options.text("tls.keyFile", files.keyFile)
  )
}

const STRATEGIES = ["createOrUpdate", "createOnly", "validateOnly", "skip"]

/** The fields of a stream (`stream`, `streams[i]`), each in its range. */
const streamFields = (option: string, s: Bag): Check =>
  Options.first(
    () => Options.name(`${option}.name`, s.name),
    () => Options.patterns(`${option}.subjects`, s.subjects),
    () => Options.oneOf(`${option}.retention`, s.retention, ["limits", "interest", "workqueue"]),
    () => Options.oneOf(`${option}.storage`, s.storage, ["file", "memory"]),
    () => Options.duration(`${option}.maxAge`, s.maxAge, NatsRanges.maxAge),
    () => Options.integer(`${option}.maxBytes`, s.maxBytes, NatsRanges.count),
    () => Options.integer(`${option}.maxMessages`, s.maxMessages, NatsRanges.count),
    () => Options.integer(`${option}.maxMessageSize`, s.maxMessageSize, NatsRanges.maxMessageSize),
    () => Options.integer(`${option}.maxMessagesPerSubject`, s.maxMessagesPerSubject, NatsRanges.count),
    () => Options.oneOf(`${option}.discard`, s.discard, ["old", "new"]),
    () => Options.integer(`${option}.replicas`, s.replicas, NatsRanges.replicas),
    () => Options.duration(`${option}.duplicateWindow`, s.duplicateWindow, NatsRanges.duplicateWindow)
  )

/**
 * One of `streams`: a stream's fields plus a name (required) and a strategy. Its subjects are required unless it is
 * only validated: the bus must know them to create the stream, and under `"skip"` to route subscriptions to it.
 */
const extraStream = (option: string, value: unknown, busStrategy: unknown): Check =>
  Options.fields(option, value, (s) => {
    const strategy = s.provisioning ?? busStrategy ?? "createOrUpdate"
    return Options.first(
      () =>
        s.name === undefined
          ? { option: `${option}.name`, message: `${option}.name is required (a stream in streams has no default name)` }
          : undefined,
      () => streamFields(option, s),
      () => Options.oneOf(`${option}.provisioning`, s.provisioning, STRATEGIES),
      () =>
        s.subjects === undefined && strategy !== "validateOnly"
          ? {
            option: `${option}.subjects`,
            message: `${option}.subjects is required with provisioning "${String(strategy)}" (only a "validateOnly" stream reads them from the server)`
          }
          : undefined
    )
  })

/**
 * Across the streams, once each is known to be valid: names are unique (the main, the extra, the dead-letter and
 * health streams), and no two of `stream` and `streams` capture the same subject (nats-server refuses overlapping
 * streams, and routing could not tell which one a topic lives in).
 */
const acrossStreams = (resolved: ResolvedConfig): Check => {
  const configured = [
    { option: "stream", name: resolved.stream.name, subjects: resolved.stream.subjects },
    ...resolved.streams.map((s, i) => ({ option: `streams[${i}]`, name: s.name, subjects: s.subjects ?? [] }))
  ]
  const named = [
    ...configured,
    { option: "deadLetters.stream", name: resolved.deadLetterStream },
    { option: "health.stream", name: resolved.healthStream }
  ]
  for (let i = 0; i < named.length; i++) {
    const { name, option } = named[i]!
    const twin = named.slice(0, i).find((other) => other.name === name)
    if (twin !== undefined) {
      return { option, message: `${option} and ${twin.option} both name the stream ${name}; every stream the bus uses needs a name of its own` }
    }
  }
  for (let i = 0; i < configured.length; i++) {
    const { name, option, subjects } = configured[i]!
    for (const other of configured.slice(0, i)) {
      for (const subject of subjects) {
        const clash = other.subjects.find((theirs) => overlaps(theirs, subject))
        if (clash !== undefined) {
          return {
            option: `${option}.subjects`,
            message: `the subjects of ${option} (stream ${name}: ${subject}) overlap with those of ${other.option} (stream ${other.name}: ${clash}); ` +
              "a subject can be captured by one stream only"
          }
        }
      }
    }
  }
  return undefined
}

/** A side stream (`deadLetters`, `health`): its name and the subject prefix it captures (`<prefix>.>`). */
const sideStream = (option: string, value: unknown, extra?: (bag: Bag) => Check): Check =>
  Options.first(() => Options.object(option, value), () => {
    const s = (value ?? {}) as Bag
    return Options.first(
      () => Options.name(`${option}.stream`, s.stream),
      () => Options.subject(`${option}.subjectPrefix`, s.subjectPrefix),
      () => extra?.(s)
    )
  })

/**
 * Checks a NATS bus configuration: the bus options every backend shares, then the NATS ones.
 */
export const checkConfig = (config: NatsEventBusConfig): Check =>
  Options.first(
    () => checkEventBusConfig(config),
    () => {
      const c = config as unknown as Bag
      const reconnect = (c.reconnect ?? {}) as Bag
      const connect = (c.connect ?? {}) as Bag
      return Options.first(
        () => servers(c.servers),
        () => Options.text("name", c.name, { maxLength: 1024 }),
        () => Options.text("user", c.user, { secret: true }),
        () => redacted("password", c.password),
        () => redacted("token", c.token),
        () => redacted("nkeySeed", c.nkeySeed),
        () => Options.text("credsFile", c.credsFile),
        () => tls(c.tls),
        () => Options.object("connect", c.connect),
        () =>
          connect.retry === undefined || Schedule.isSchedule(connect.retry)
            ? undefined
            : { option: "connect.retry", message: `connect.retry must be a Schedule, got ${Options.show(connect.retry)}` },
        () => Options.duration("connect.timeout", connect.timeout, NatsRanges.connectTimeout),
        () => Options.object("reconnect", c.reconnect),
        () => Options.integer("reconnect.maxAttempts", reconnect.maxAttempts, NatsRanges.reconnectAttempts),
        () => Options.duration("reconnect.wait", reconnect.wait, NatsRanges.reconnectWait),
        () => Options.duration("reconnect.jitter", reconnect.jitter, NatsRanges.reconnectJitter),
        () => Options.fields("stream", c.stream, (s) => streamFields("stream", s)),
        () => Options.oneOf("provisioning", c.provisioning, STRATEGIES),
        () => Options.oneOf("persistence", c.persistence, TopicConfig.PERSISTENCE),
        () => Options.list("streams", c.streams, (option, value) => extraStream(option, value, c.provisioning)),
        () =>
          sideStream("deadLetters", c.deadLetters, (d) =>
            Options.first(
              () => Options.duration("deadLetters.maxAge", d.maxAge, NatsRanges.maxAge),
              () => Options.integer("deadLetters.replicas", d.replicas, NatsRanges.replicas),
              () => Options.oneOf("deadLetters.storage", d.storage, ["file", "memory"])
            )),
        () => sideStream("health", c.health),
        () => Options.duration("publishTimeout", c.publishTimeout, Options.Ranges.timeout),
        () => Options.integer("maxPendingPublishes", c.maxPendingPublishes, NatsRanges.maxPendingPublishes),
        () => Options.duration("checkTimeout", c.checkTimeout, Options.Ranges.timeout),
        // Last: it reads the configuration with its defaults, which needs every option valid.
        () => acrossStreams(resolveConfig(config))
      )
    }
  )

/** The problem as the NATS backend's start-up error. */
export const configError = (found: Options.Problem): NatsError =>
  new NatsError({ reason: "Config", message: `invalid NATS bus configuration: ${found.message}` })
