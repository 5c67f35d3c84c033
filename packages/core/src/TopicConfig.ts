/**
 * Per-topic persistence, configured at start-up or at run time: whether a topic's events are stored and redelivered
 * (`persistent`, the default) or only handed to the subscribers listening right now (`ephemeral`, at most once, the
 * lowest latency). The bus routes every publish and subscribe by this configuration with a map lookup, never a call
 * to the broker; the backend implements the registry (`Transport.topics`) because only it knows what storing a topic
 * takes (on NATS: a stream that captures its subject). docs/operations.md, "Topics and persistence".
 *
 * @module
 */
import { Effect, Option } from "effect"
import { type InvalidTopic, TopicConfigError } from "./Errors.ts"
import * as Options from "./Options.ts"
import { checkTopic } from "./Topic.ts"

/**
 * How a topic's events travel:
 * - `"persistent"`: stored in the backend's log (a JetStream stream on NATS) and delivered at least once, with
 *   redelivery, dead letters, groups that resume and late subscribers that read history;
 * - `"ephemeral"`: not stored; each event goes to the subscriptions of the topic that exist when it is published (one
 *   member per group), at most once (core NATS on NATS);
 * - `"auto"`: persistent where the backend can store events (JetStream is enabled), ephemeral where it cannot.
 *
 * @since 0.1.0
 * @category models
 */
export type Persistence = "persistent" | "ephemeral" | "auto"

/**
 * What a topic is configured with.
 *
 * @since 0.1.0
 * @category models
 */
export interface TopicSettings {
  readonly persistence: Persistence
  /** What the topic carries, for operators (`list` shows it). */
  readonly description?: string
}

/**
 * A configured topic as the registry reports it.
 *
 * @since 0.1.0
 * @category models
 */
export interface TopicEntry extends TopicSettings {
  readonly topic: string
  /** The persistence in force: `auto` resolved against what the backend can do. */
  readonly effective: "persistent" | "ephemeral"
  /** The stream (log) that stores the topic when it is persistent, where the backend has several. */
  readonly stream?: string
}

/**
 * The topic registry a backend implements (`Transport.topics`) and the bus exposes as `bus.topics`. The bus checks
 * every topic name first, with the errors of `validateTopic` (`InvalidTopic`); the backend receives concrete,
 * valid topics only. A change applies to later publishes and later subscriptions: a subscription keeps the
 * persistence it started with.
 *
 * @since 0.1.0
 * @category models
 */
export interface TopicRegistry {
  /**
   * Sets a topic's persistence (replacing its earlier settings). Fails with `TopicConfigError` when the backend cannot
   * honour it: e.g. on NATS a persistent topic that no stream captures and the bus may not add to its own stream, or
   * an ephemeral topic that a stream captures (it would be stored all the same).
   */
  readonly configure: (topic: string, settings: TopicSettings) => Effect.Effect<TopicEntry, TopicConfigError>
  /** The topic's entry, when it is configured. */
  readonly get: (topic: string) => Effect.Effect<Option.Option<TopicEntry>>
  /** Every configured topic, sorted by name. */
  readonly list: Effect.Effect<ReadonlyArray<TopicEntry>>
  /**
   * Forgets a topic's configuration, so it follows the backend's default persistence again; `true` when it was
   * configured. Stored events stay where they are. On NATS a subject the bus added to its stream for this topic stays
   * in the stream, so the topic stays captured (and so persistent under a persistent default).
   */
  readonly remove: (topic: string) => Effect.Effect<boolean>
}

/**
 * The persistence values, in the order messages list them (for option checks).
 *
 * @since 0.1.0
 * @category constants
 */
export const PERSISTENCE: ReadonlyArray<Persistence> = ["persistent", "ephemeral", "auto"]

/**
 * Checks one topic's settings (a persistence value alone is short for `{ persistence }`), naming the option.
 *
 * @since 0.1.0
 * @category checks
 */
export const checkSettings = (option: string, value: unknown): Options.Check => {
  const persistence = (path: string, given: unknown): Options.Check =>
    given === undefined
      ? { option: path, message: `${path} must be one of ${PERSISTENCE.map(Options.show).join(", ")}, got undefined` }
      : Options.oneOf(path, given, PERSISTENCE)
  return typeof value === "string" || value === undefined
    ? persistence(option, value)
    : Options.fields(option, value, (s) =>
      Options.first(
        () => persistence(`${option}.persistence`, s.persistence),
        () => Options.text(`${option}.description`, s.description, { maxLength: 4096 })
      ))
}

/**
 * Settings from their short form: a persistence value alone means `{ persistence }`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const settingsOf = (value: Persistence | TopicSettings): TopicSettings =>
  typeof value === "string" ? { persistence: value } : value

/**
 * Reads a topic list from its text form, as environment variables carry it: `topic=persistence` pairs separated by
 * commas (blanks around each part ignored), e.g. `power.telemetry.v1.reading=ephemeral,cqc.events.v1.order_placed=persistent`.
 * Returns the problem, naming `option` and the offending pair, when the text is not such a list.
 *
 * @since 0.1.0
 * @category constructors
 */
export const parseList = (
  option: string,
  text: string
): { readonly topics: Readonly<Record<string, Persistence>> } | { readonly problem: Options.Problem } => {
  const topics: Record<string, Persistence> = {}
  for (const raw of text.split(",")) {
    const pair = raw.trim()
    if (pair.length === 0) continue
    const at = pair.lastIndexOf("=")
    const topic = at < 0 ? "" : pair.slice(0, at).trim()
    const persistence = at < 0 ? "" : pair.slice(at + 1).trim()
    if (topic.length === 0 || !PERSISTENCE.includes(persistence as Persistence)) {
      return {
        problem: {
          option,
          message: `${option} must be a comma-separated list of topic=${PERSISTENCE.join("|")}, got ${Options.show(pair)}`
        }
      }
    }
    topics[topic] = persistence as Persistence
  }
  return { topics }
}

/**
 * The topic configuration as the bus offers it (`bus.topics`): the backend's registry behind a check of every topic
 * name (the errors of `validateTopic`) and of the settings (`TopicConfigError` reason `InvalidOptions`). A persistence
 * value alone is short for `{ persistence }`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Topics {
  readonly configure: (
    topic: string,
    settings: Persistence | TopicSettings
  ) => Effect.Effect<TopicEntry, TopicConfigError | InvalidTopic>
  readonly get: (topic: string) => Effect.Effect<Option.Option<TopicEntry>, InvalidTopic>
  readonly list: Effect.Effect<ReadonlyArray<TopicEntry>>
  readonly remove: (topic: string) => Effect.Effect<boolean, InvalidTopic>
}

/** Runs `f` on a valid concrete topic, or fails with the topic's `InvalidTopic`. */
const valid = <A, E>(topic: string, f: (topic: string) => Effect.Effect<A, E>): Effect.Effect<A, E | InvalidTopic> =>
  Effect.suspend((): Effect.Effect<A, E | InvalidTopic> => {
    const invalid = checkTopic(topic, "subject")
    return invalid === undefined ? f(topic) : Effect.fail(invalid)
  })

/**
 * The bus's `topics` over a backend's registry; without one (a backend that stores every topic), `configure` accepts
 * nothing but fails with reason `Unsupported`, and nothing is ever configured.
 *
 * @since 0.1.0
 * @category constructors
 */
export const topics = (registry: TopicRegistry | undefined, backend: string): Topics => ({
  configure: (topic, given) =>
    valid(topic, (topic) => {
      const found = checkSettings("settings", given)
      if (found !== undefined) {
        return Effect.fail(
          new TopicConfigError({ topic, reason: "InvalidOptions", message: `cannot configure ${topic}: ${found.message}` })
        )
      }
      if (registry === undefined) {
        return Effect.fail(
          new TopicConfigError({
            topic,
            reason: "Unsupported",
            message: `cannot configure ${topic}: the ${backend} backend has no per-topic persistence (it stores every topic)`
          })
        )
      }
      return registry.configure(topic, settingsOf(given))
    }),
  get: (topic) => valid(topic, (topic) => registry === undefined ? Effect.succeedNone : registry.get(topic)),
  list: registry === undefined ? Effect.succeed([]) : registry.list,
  remove: (topic) => valid(topic, (topic) => registry === undefined ? Effect.succeed(false) : registry.remove(topic))
})
