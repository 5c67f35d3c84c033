/**
 * The memory transport's topic registry (`Transport.topics`, see `TopicConfig`): each configured topic's settings in a
 * map, and the transport's default persistence for every other topic. The memory log can store any topic, so `"auto"`
 * is persistent here and a configure is never refused; it only changes how later publishes and later subscriptions of
 * the topic travel (docs/semantics.md, "Ephemeral topics"). A lookup per publish, never more.
 */
import { Effect, Option } from "effect"
import type { Persistence, TopicEntry, TopicRegistry, TopicSettings } from "../TopicConfig.ts"

/** The registry, plus the one question the transport asks on its hot path. */
export interface MemoryTopics {
  readonly registry: TopicRegistry
  /** Whether a publish on this concrete topic, or a new subscription to it, is ephemeral now. */
  readonly isEphemeral: (topic: string) => boolean
}

/** `"auto"` resolved for a backend that can always store. */
const effectiveOf = (persistence: Persistence): "persistent" | "ephemeral" =>
  persistence === "ephemeral" ? "ephemeral" : "persistent"

/**
 * A registry over topics whose settings the bus has already checked. `fallback` is the transport's `persistence`
 * option; `stream` the name its acks report, given as the `stream` of persistent entries.
 */
export const makeMemoryTopics = (fallback: Persistence, stream: string): MemoryTopics => {
  const configured = new Map<string, TopicEntry>()
  const ephemeralByDefault = effectiveOf(fallback) === "ephemeral"

  const entryOf = (topic: string, settings: TopicSettings): TopicEntry => {
    const effective = effectiveOf(settings.persistence)
    // Only the known fields: the settings object is the caller's, and the entry is kept and handed out.
    return {
      topic,
      persistence: settings.persistence,
      ...(settings.description === undefined ? {} : { description: settings.description }),
      effective,
      ...(effective === "persistent" ? { stream } : {})
    }
  }

  const registry: TopicRegistry = {
    configure: (topic, settings) =>
      Effect.sync(() => {
        const entry = entryOf(topic, settings)
        configured.set(topic, entry)
        return entry
      }),
    get: (topic) => Effect.sync(() => Option.fromNullishOr(configured.get(topic))),
    list: Effect.sync(() => Array.from(configured.values()).sort((a, b) => (a.topic < b.topic ? -1 : a.topic > b.topic ? 1 : 0))),
    remove: (topic) => Effect.sync(() => configured.delete(topic))
  }

  return {
    registry,
    isEphemeral: (topic) => {
      // Runs on every publish: with nothing configured there is nothing to look up.
      if (configured.size === 0) return ephemeralByDefault
      const entry = configured.get(topic)
      return entry === undefined ? ephemeralByDefault : entry.effective === "ephemeral"
    }
  }
}
