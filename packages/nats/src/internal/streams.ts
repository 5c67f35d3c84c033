/**
 * Which stream holds a topic: the one routing module that consumer setup, topic configuration and the health check
 * read, so "where does this topic live" is answered the same way everywhere. A NATS subject is captured by at most
 * one stream (the server refuses overlapping streams), so the answer is a lookup: the streams the bus knows from its
 * configuration first, then the server (`$JS.API.STREAM.NAMES` filtered by subject), once per topic and cached; no
 * lookup happens on the publish path (JetStream routes a publish by its subject itself).
 */
import { SubscribeError, TopicConfigError } from "@cqbus/core"
import { compilePattern, redactSecrets } from "@cqbus/core/backend"
import type { JetStreamManager, StreamConfig } from "@nats-io/jetstream"
import { Effect } from "effect"
import type { ResolvedConfig } from "../NatsConfig.ts"
import { message } from "./errors.ts"

/**
 * A stream as routing sees it.
 */
export interface StreamInfo {
  readonly name: string
  readonly subjects: ReadonlyArray<string>
  /** The bus provisions it (it may add and remove topics); otherwise another service's stream the bus only reads. */
  readonly own: boolean
}

/**
 * The routing of topics to streams.
 */
export interface StreamRoutes {
  /** The bus's main stream (`stream.name`): where topics configured persistent at run time are added. */
  readonly primary: string
  /** Every stream the bus knows from its configuration, the health stream included, for `check`. */
  readonly known: ReadonlyArray<StreamInfo>
  /** The known stream that captures a concrete subject, without asking the server (for the publish path). */
  readonly knownStream: (subject: string) => StreamInfo | undefined
  /** The stream a subscription to `topic` (a subject or a pattern) consumes from. */
  readonly streamFor: (topic: string, group: string | undefined) => Effect.Effect<string, SubscribeError>
  /** The stream that captures a concrete subject, or `undefined` when none does. */
  readonly capturing: (subject: string) => Effect.Effect<StreamInfo | undefined, TopicConfigError>
  /**
   * Adds a concrete subject to the primary stream's subjects (a topic configured persistent at run time), when the
   * provisioning strategy lets the bus change its stream; returns the stream's name.
   */
  readonly addSubject: (subject: string) => Effect.Effect<string, TopicConfigError>
  /** Removes a subject `addSubject` added (a topic configured ephemeral again). */
  readonly removeSubject: (subject: string) => Effect.Effect<void, TopicConfigError>
}

const transportError = (topic: string, what: string, cause: unknown): TopicConfigError =>
  new TopicConfigError({ topic, reason: "Transport", message: redactSecrets(`cannot ${what} for ${topic}: ${message(cause)}`), cause })

/**
 * The routes of a bus: its configured streams (main and health), then the server.
 */
export const make = (jsm: JetStreamManager, resolved: ResolvedConfig): StreamRoutes => {
  const primary = resolved.stream.name
  const known: ReadonlyArray<StreamInfo> = [
    { name: primary, subjects: resolved.stream.subjects, own: true },
    { name: resolved.healthStream, subjects: [`${resolved.healthPrefix}.>`], own: true }
  ]
  const matchers = known.map((info) => ({ info, matches: info.subjects.map((s) => compilePattern(s)) }))
  /** The known stream whose subjects capture `subject`. */
  const knownFor = (subject: string): StreamInfo | undefined =>
    matchers.find(({ matches }) => matches.some((m) => m(subject)))?.info

  const lookup = (subject: string): Promise<StreamInfo | undefined> =>
    (async () => {
      const name = await jsm.streams.find(subject).catch(() => undefined)
      if (name === undefined) return undefined
      const config: StreamConfig = (await jsm.streams.info(name)).config
      return { name, subjects: config.subjects ?? [], own: name === primary }
    })()

  const capturing: StreamRoutes["capturing"] = (subject) =>
    Effect.suspend(() => {
      const found = knownFor(subject)
      if (found !== undefined) return Effect.succeed(found)
      return Effect.tryPromise({ try: () => lookup(subject), catch: (cause) => transportError(subject, "find the stream", cause) })
    })

  const streamFor: StreamRoutes["streamFor"] = (topic) =>
    Effect.succeed(knownFor(topic)?.name ?? primary)

  const changeSubjects = (subject: string, change: (subjects: ReadonlyArray<string>) => Array<string>, what: string) =>
    Effect.tryPromise({
      try: async () => {
        const info = await jsm.streams.info(primary)
        await jsm.streams.update(primary, { ...info.config, subjects: change(info.config.subjects ?? []) })
        return primary
      },
      catch: (cause) => transportError(subject, what, cause)
    })

  const mayChange = (subject: string): TopicConfigError | undefined =>
    resolved.provisioning === "createOrUpdate"
      ? undefined
      : new TopicConfigError({
        topic: subject,
        reason: "NoStream",
        message:
          `no stream captures ${subject}, and provisioning "${resolved.provisioning}" lets the bus change no stream; add ${subject} to a stream's subjects`
      })

  return {
    primary,
    known,
    knownStream: knownFor,
    streamFor,
    capturing,
    addSubject: (subject) =>
      Effect.suspend(() => {
        const refused = mayChange(subject)
        return refused !== undefined
          ? Effect.fail(refused)
          : changeSubjects(subject, (subjects) => subjects.includes(subject) ? [...subjects] : [...subjects, subject], `add ${subject} to stream ${primary}`)
      }),
    removeSubject: (subject) =>
      Effect.asVoid(changeSubjects(subject, (subjects) => subjects.filter((s) => s !== subject), `remove ${subject} from stream ${primary}`))
  }
}
