/**
 * Start-up provisioning of the event streams (the main one and `streams`, each under its strategy), the dead-letter
 * stream and the health stream. Validation compares only the fields the options set, so a stream tuned by operators in other respects still
 * validates.
 */
import { redactSecrets as redact } from "@cqbus/core/backend"
import { JetStreamApiError, type JetStreamManager, type StreamConfig } from "@nats-io/jetstream"
import { nanos } from "@nats-io/nats-core"
import { Duration, Effect } from "effect"
import type { NatsStreamOptions, ProvisioningStrategy, ResolvedConfig } from "../NatsConfig.ts"
import { NatsError } from "../NatsError.ts"
import { ApiCodes, causes, isNotFound, message } from "./errors.ts"

/** Whether start-up creates streams under `strategy` (so the bus owns them and may change them). */
export const provisions = (strategy: ProvisioningStrategy): boolean =>
  strategy === "createOrUpdate" || strategy === "createOnly"

/** The stream configuration the options ask for (only the fields they set; no subjects when none are given). */
export const streamConfig = (options: NatsStreamOptions & { readonly name: string }): Partial<StreamConfig> & { name: string } => {
  const config: Record<string, unknown> = { name: options.name }
  if (options.subjects !== undefined) config.subjects = [...options.subjects]
  if (options.retention !== undefined) config.retention = options.retention
  if (options.storage !== undefined) config.storage = options.storage
  if (options.maxAge !== undefined) config.max_age = nanos(Duration.toMillis(options.maxAge))
  if (options.maxBytes !== undefined) config.max_bytes = options.maxBytes
  if (options.maxMessages !== undefined) config.max_msgs = options.maxMessages
  if (options.maxMessageSize !== undefined) config.max_msg_size = options.maxMessageSize
  if (options.maxMessagesPerSubject !== undefined) config.max_msgs_per_subject = options.maxMessagesPerSubject
  if (options.discard !== undefined) config.discard = options.discard
  if (options.replicas !== undefined) config.num_replicas = options.replicas
  if (options.duplicateWindow !== undefined) config.duplicate_window = nanos(Duration.toMillis(options.duplicateWindow))
  return config as Partial<StreamConfig> & { name: string }
}

const same = (a: unknown, b: unknown): boolean =>
  Array.isArray(a) && Array.isArray(b)
    ? a.length === b.length && [...a].sort().every((x, i) => x === [...b].sort()[i])
    : a === b

/**
 * The fields where the existing configuration differs from the wanted one, as `field: have → want`; `show` writes a
 * value (JSON by default; consumers show durations as `2s`).
 */
export const differences = <C extends object = StreamConfig>(
  have: Partial<C>,
  want: Partial<C>,
  show: (field: string, value: unknown) => string = (_field, value) => JSON.stringify(value)
): ReadonlyArray<string> =>
  Object.entries(want)
    .filter(([field, value]) => !same((have as Record<string, unknown>)[field], value))
    .map(([field, value]) => `${field}: ${show(field, (have as Record<string, unknown>)[field])} → ${show(field, value)}`)

/** The streams other than `name` whose subjects collide with `subjects`, as `NAME (subjects a, b)`, for an overlap error. */
const overlapping = async (jsm: JetStreamManager, name: string, subjects: ReadonlyArray<string>): Promise<Array<string>> => {
  const found = new Map<string, ReadonlyArray<string>>()
  for (const subject of subjects) {
    // The server filters by subject itself (the streams whose subjects collide with the one given).
    for await (const info of jsm.streams.list(subject)) {
      if (info.config.name !== name) found.set(info.config.name, info.config.subjects ?? [])
    }
  }
  return [...found].map(([other, theirs]) => `${other} (subjects ${theirs.join(", ")})`)
}

/**
 * A stream management failure as a `NatsError`, by nats.js's error codes; overlaps name the other stream and `option`,
 * where the stream is configured (`stream`, `streams[1]`).
 */
const provisionError = async (
  jsm: JetStreamManager,
  want: Partial<StreamConfig> & { name: string },
  option: string,
  cause: unknown
): Promise<NatsError> => {
  const api = causes(cause).find((e): e is JetStreamApiError => e instanceof JetStreamApiError)
  const subjects = want.subjects ?? []
  if (api?.code === ApiCodes.SubjectsOverlap) {
    const others = await overlapping(jsm, want.name, subjects).catch(() => [])
    return new NatsError({
      reason: "Provision",
      stream: want.name,
      code: api.code,
      message: `cannot provision stream ${want.name}: its subjects ${subjects.join(", ")} overlap with ${
        others.length === 0 ? "an existing stream" : `the existing stream ${others.join(", stream ")}`
      }; set ${option}.name to that stream to use it (or read it through streams with provisioning "validateOnly"), or ${option}.subjects to subjects no other stream captures`
    })
  }
  return new NatsError({
    reason: "Provision",
    stream: want.name,
    ...(api === undefined ? {} : { code: api.code }),
    message: redact(`cannot provision stream ${want.name}: ${message(cause)}`)
  })
}

/**
 * Creates, updates or validates one stream according to the strategy; answers the subjects the stream has on the
 * server afterwards (`undefined` under `"skip"`, which asks nothing). `option` says where the stream is configured,
 * for the errors.
 */
export const provisionStream = (
  jsm: JetStreamManager,
  want: Partial<StreamConfig> & { name: string },
  strategy: ProvisioningStrategy,
  option = "stream"
): Effect.Effect<ReadonlyArray<string> | undefined, NatsError> =>
  Effect.tryPromise({
    try: async (): Promise<ReadonlyArray<string> | NatsError | undefined> => {
      if (strategy === "skip") return undefined
      try {
        let have: StreamConfig | undefined
        try {
          have = (await jsm.streams.info(want.name)).config
        } catch (cause) {
          if (!isNotFound(cause, ApiCodes.StreamNotFound)) throw cause
        }
        if (have === undefined) {
          if (strategy === "validateOnly") {
            return new NatsError({
              reason: "Provision",
              stream: want.name,
              message: `stream ${want.name} does not exist (provisioning: validateOnly)`
            })
          }
          return (await jsm.streams.add(want)).config.subjects ?? []
        }
        // Subjects only grow: a topic configured persistent at run time (`bus.topics`, here or in another instance of
        // the service) is added to the stream, and a restart with the configured subjects must not take it away again
        // (its publishes would fail `NoStream`). So the configured subjects must be among the stream's, not equal them.
        const subjects = want.subjects === undefined ? undefined : [...new Set([...(have.subjects ?? []), ...want.subjects])]
        const wanted = subjects === undefined ? want : { ...want, subjects }
        const diff = differences(have, wanted)
        if (diff.length === 0 || strategy === "createOnly") return have.subjects ?? []
        if (strategy === "validateOnly") {
          return new NatsError({
            reason: "Provision",
            stream: want.name,
            message: `stream ${want.name} differs from the configuration (provisioning: validateOnly): ${diff.join("; ")}`
          })
        }
        return (await jsm.streams.update(want.name, { ...have, ...wanted })).config.subjects ?? []
      } catch (cause) {
        return await provisionError(jsm, want, option, cause)
      }
    },
    // Only a defect of the code above lands here; every management failure was turned into a `NatsError` already.
    catch: (cause) => new NatsError({ reason: "Provision", stream: want.name, message: redact(message(cause)) })
  }).pipe(Effect.flatMap((result) => result instanceof NatsError ? Effect.fail(result) : Effect.succeed(result)))

/**
 * The bus's streams: the main one and each of `streams` under its strategy, dead letters and heartbeat probes created
 * when missing. Answers the subjects each event stream has on the server, by name, for routing (a `"validateOnly"`
 * stream configured without subjects is known by them; a stream under `"skip"` is missing: nothing was asked).
 */
export const provisionStreams = (
  jsm: JetStreamManager,
  resolved: ResolvedConfig
): Effect.Effect<ReadonlyMap<string, ReadonlyArray<string>>, NatsError> =>
  Effect.gen(function*() {
    const subjects = new Map<string, ReadonlyArray<string>>()
    const streams = [
      { option: "stream", options: resolved.stream, strategy: resolved.provisioning },
      ...resolved.streams.map((options, i) => ({ option: `streams[${i}]`, options, strategy: options.provisioning }))
    ]
    for (const { option, options, strategy } of streams) {
      const found = yield* provisionStream(jsm, streamConfig(options), strategy, option)
      if (found !== undefined) subjects.set(options.name, found)
    }
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
    if (provisions(resolved.provisioning)) {
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
    return subjects
  })
