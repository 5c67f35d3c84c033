/**
 * The NATS bus's per-topic persistence: which topics go through JetStream and which through core NATS, kept in memory
 * and read with one map lookup per publish and subscribe (none at all while no topic is ephemeral and the default is
 * persistent). Configuring a topic is where the management calls happen: a persistent topic needs a stream that
 * captures it (the stream routing finds one, or the bus adds the topic to its own stream), an ephemeral one must not be
 * captured by any stream, since JetStream stores every core-NATS publish on a subject it captures.
 */
import {
  type Persistence,
  type TopicConfigError as TopicConfigErrorType,
  TopicConfigError,
  type TopicEntry,
  type TopicRegistry,
  type TopicSettings
} from "@cqbus/core"
import { Effect, Option, Semaphore } from "effect"
import type { StreamRoutes } from "./streams.ts"

/**
 * The registry and the lookups publish and consume make.
 */
export interface TopicTable {
  readonly registry: TopicRegistry
  /** Whether `topic` is ephemeral right now (a concrete subject; patterns are always read from streams). */
  readonly isEphemeral: (topic: string) => boolean
  /** Whether JetStream is enabled: without it every topic that resolves to persistent fails. */
  readonly jetStream: boolean
}

interface Stored {
  readonly settings: TopicSettings
  readonly effective: "persistent" | "ephemeral"
  readonly stream: string | undefined
}

/**
 * A registry over `routes`: `persistence` is the default of unconfigured topics, `jetStream` whether the server has
 * JetStream (it decides `auto`).
 */
export const make = (options: {
  readonly routes: StreamRoutes
  readonly persistence: Persistence
  readonly jetStream: boolean
}): TopicTable => {
  const { jetStream, routes } = options
  const resolve = (persistence: Persistence): "persistent" | "ephemeral" =>
    persistence === "auto" ? (jetStream ? "persistent" : "ephemeral") : persistence
  const fallback = resolve(options.persistence)
  const topics = new Map<string, Stored>()
  /** Unconfigured topics under an ephemeral default: whether each is ephemeral (see `defaultEphemeral`). */
  const byDefault = new Map<string, boolean>()
  /** Configured topics whose persistence differs from the default: when there are none, nothing is looked up. */
  let exceptions = 0
  const recount = () => {
    // A configure may have changed a stream's subjects, and with them which unconfigured topics a stream captures.
    byDefault.clear()
    exceptions = 0
    for (const stored of topics.values()) if (stored.effective !== fallback) exceptions++
  }

  /**
   * An unconfigured topic under an ephemeral default: ephemeral unless one of the bus's streams captures it (JetStream
   * would store its core-NATS publishes all the same, so it is published and read as the persistent topic it is).
   * Remembered per topic: the answer depends on the configuration only.
   */
  const defaultEphemeral = (topic: string): boolean => {
    let ephemeral = byDefault.get(topic)
    if (ephemeral === undefined) {
      ephemeral = !jetStream || routes.knownStream(topic) === undefined
      if (byDefault.size < 10_000) byDefault.set(topic, ephemeral)
    }
    return ephemeral
  }

  const isEphemeral = (topic: string): boolean => {
    const stored = exceptions === 0 ? undefined : topics.get(topic)
    if (stored !== undefined) return stored.effective === "ephemeral"
    return fallback === "ephemeral" && defaultEphemeral(topic)
  }

  const entryOf = (topic: string, stored: Stored): TopicEntry => ({
    topic,
    ...stored.settings,
    effective: stored.effective,
    ...(stored.stream === undefined ? {} : { stream: stored.stream })
  })

  const refuse = (topic: string, reason: TopicConfigErrorType["reason"], message: string) =>
    Effect.fail(new TopicConfigError({ topic, reason, message: `cannot configure ${topic}: ${message}` }))

  /** The stream that will store a persistent topic: the one capturing it, else the bus's own with the topic added. */
  const storeIn = (topic: string): Effect.Effect<string, TopicConfigError> =>
    jetStream
      ? Effect.flatMap(routes.capturing(topic), (found) => found === undefined ? routes.addSubject(topic) : Effect.succeed(found.name))
      : refuse(topic, "Unsupported", "it is persistent, and JetStream is not enabled on this server (configure it ephemeral or auto)")

  /**
   * Makes sure no stream stores an ephemeral topic: a subject the bus's own stream lists for exactly this topic (added
   * by an earlier `configure`, here or by another instance) is removed; any other capture refuses.
   */
  const keepOut = (topic: string): Effect.Effect<void, TopicConfigError> =>
    jetStream
      ? Effect.flatMap(routes.capturing(topic), (found) => {
        if (found === undefined) return Effect.void
        if (found.own && found.name === routes.primary && found.subjects.includes(topic)) return routes.removeSubject(topic)
        return refuse(
          topic,
          "Captured",
          `it is to be ephemeral, but stream ${found.name} (subjects ${found.subjects.join(", ")}) captures it and would ` +
            `store it all the same; use a subject outside every stream for ephemeral events, or keep the topic persistent`
        )
      })
      : Effect.void

  // One change at a time: adding or removing a subject reads and rewrites the stream's whole subject list.
  const changes = Semaphore.makeUnsafe(1)

  const registry: TopicRegistry = {
    configure: (topic, settings) =>
      changes.withPermit(Effect.gen(function*() {
        const effective = resolve(settings.persistence)
        const set = (stored: Stored | undefined) => {
          if (stored === undefined) topics.delete(topic)
          else topics.set(topic, stored)
          recount()
        }
        if (effective === "persistent") {
          // The subject is captured first, then publishes turn to JetStream: none meets a stream that is not there yet.
          const stored: Stored = { settings: { ...settings }, effective, stream: yield* storeIn(topic) }
          set(stored)
          return entryOf(topic, stored)
        }
        // Publishes turn to core NATS first (still stored while the subject is captured, which is harmless), then the
        // subject is removed: none meets a stream that no longer captures it. A refusal restores the previous entry.
        const before = topics.get(topic)
        const stored: Stored = { settings: { ...settings }, effective, stream: undefined }
        set(stored)
        yield* Effect.tapError(keepOut(topic), () => Effect.sync(() => set(before)))
        return entryOf(topic, stored)
      })),
    get: (topic) =>
      Effect.sync(() => {
        const stored = topics.get(topic)
        return stored === undefined ? Option.none() : Option.some(entryOf(topic, stored))
      }),
    list: Effect.sync(() => [...topics].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([topic, stored]) => entryOf(topic, stored))),
    remove: (topic) =>
      changes.withPermit(Effect.sync(() => {
        const removed = topics.delete(topic)
        if (removed) recount()
        return removed
      }))
  }
  return { registry, isEphemeral, jetStream }
}
