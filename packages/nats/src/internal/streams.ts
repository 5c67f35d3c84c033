/**
 * Which stream holds a topic: the one routing module that consumer setup and topic configuration read, so "where
 * does this topic live" is answered the same way everywhere. A bus knows the streams of its configuration (the main
 * `stream`, the ones in `streams`, the health stream) and asks the server about the rest (`$JS.API.STREAM.LIST`
 * filtered by subject), once per topic, caching the answer; no lookup happens on the publish path (JetStream routes a
 * publish by its subject itself).
 *
 * A subscription reads one stream: a consumer lives on one stream, and nats-server 2.9 has no consumer across streams.
 * So a topic or pattern is routed to the stream whose subjects cover it, or else to the only stream on the server
 * whose subjects match any of it (which therefore holds every stored event the pattern matches); a pattern that spans
 * streams, or a topic no stream captures, fails the subscription saying so instead of reaching the server's "consumer
 * filter subject is not a valid subset" error.
 */
import { SubscribeError, TopicConfigError } from "@cqbus/core"
import { redactSecrets } from "@cqbus/core/backend"
import type { JetStreamManager } from "@nats-io/jetstream"
import { Effect } from "effect"
import type { ResolvedConfig } from "../NatsConfig.ts"
import { ADD_A_STREAM, message } from "./errors.ts"
import { provisions } from "./provision.ts"
import { coveredBy } from "./subjects.ts"

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
  /**
   * Every stream the bus knows from its configuration (main, `streams`, health), with the subjects it has on the
   * server where start-up asked (else the configured ones).
   */
  readonly known: ReadonlyArray<StreamInfo>
  /** The known stream that captures a concrete subject, without asking the server (for the publish path). */
  readonly knownStream: (subject: string) => StreamInfo | undefined
  /**
   * The stream a subscription to `topic` (a subject or a pattern) consumes from: a known stream that covers it, else
   * the one stream the server has for it (asked once per topic). Fails `InvalidOptions` when no stream captures it or
   * a pattern spans several streams; under provisioning `"skip"` the server is not asked and the main stream answers.
   */
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

/** `stream A (subjects a.>, b)`, for messages that name streams. */
const describe = (streams: ReadonlyArray<StreamInfo>): string =>
  streams.map((s) => `stream ${s.name} (subjects ${s.subjects.join(", ")})`).join(", ")

/**
 * The routes of a bus: its configured streams, then the server. `onServer` holds the subjects start-up found on the
 * server for each stream it provisioned or validated (a stream validated without configured subjects is known by
 * these; a stream that exists with other subjects than configured, under `"createOnly"`, is routed by what it has).
 */
export const make = (
  jsm: JetStreamManager,
  resolved: ResolvedConfig,
  onServer: ReadonlyMap<string, ReadonlyArray<string>> = new Map()
): StreamRoutes => {
  const primary = resolved.stream.name
  let known: ReadonlyArray<StreamInfo> = [
    { name: primary, subjects: onServer.get(primary) ?? resolved.stream.subjects, own: true },
    ...resolved.streams.map((s) => ({
      name: s.name,
      subjects: onServer.get(s.name) ?? s.subjects ?? [],
      own: provisions(s.provisioning)
    })),
    { name: resolved.healthStream, subjects: [`${resolved.healthPrefix}.>`], own: true }
  ]
  /** Answers of the server per subscribed topic (only found streams: a stream created later is found next time). */
  const cache = new Map<string, string>()

  /** The known stream whose subjects cover `topic`. */
  const knownFor = (topic: string): StreamInfo | undefined => known.find((info) => coveredBy(info.subjects, topic))

  /** The streams on the server whose subjects match any subject `topic` matches (the server's own filter). */
  const listed = async (topic: string): Promise<ReadonlyArray<StreamInfo>> => {
    const found: Array<StreamInfo> = []
    for await (const info of jsm.streams.list(topic)) {
      const name = info.config.name
      found.push({ name, subjects: info.config.subjects ?? [], own: known.find((k) => k.name === name)?.own ?? false })
    }
    return found
  }

  const capturing: StreamRoutes["capturing"] = (subject) =>
    Effect.suspend(() => {
      const found = knownFor(subject)
      if (found !== undefined) return Effect.succeed(found)
      // A concrete subject matches at most one stream: the server refuses streams whose subjects overlap.
      return Effect.tryPromise({
        try: async () => (await listed(subject))[0],
        catch: (cause) => transportError(subject, "find the stream", cause)
      })
    })

  const refuse = (topic: string, group: string | undefined, why: string): SubscribeError =>
    new SubscribeError({ topic, group, reason: "InvalidOptions", message: `cannot subscribe to ${topic}: ${why}` })

  /** The one stream that holds every stored event `topic` matches, among those the server listed. */
  const chooseFrom = (topic: string, group: string | undefined, streams: ReadonlyArray<StreamInfo>) => {
    if (streams.length === 1) return Effect.succeed(streams[0]!.name)
    if (streams.length === 0) {
      return Effect.fail(refuse(
        topic,
        group,
        `no stream captures it; the bus knows ${describe(known)} and the server has no other stream for it; ` +
          `${ADD_A_STREAM}, or subscribe to a topic a stream captures`
      ))
    }
    return Effect.fail(refuse(
      topic,
      group,
      `it spans ${streams.length} streams: ${describe(streams)}. A subscription reads one stream (a consumer lives ` +
        "on one stream; nats-server 2.9 has no consumer across streams), so subscribe to a narrower topic in each"
    ))
  }

  const streamFor: StreamRoutes["streamFor"] = (topic, group) =>
    Effect.suspend(() => {
      const found = knownFor(topic)?.name ?? cache.get(topic)
      if (found !== undefined) return Effect.succeed(found)
      // "skip" promises no management call: the main stream answers, as before there were many streams.
      if (resolved.provisioning === "skip") return Effect.succeed(primary)
      return Effect.tryPromise({
        try: () => listed(topic),
        catch: (cause) =>
          new SubscribeError({
            topic,
            group,
            reason: "Transport",
            message: redactSecrets(`cannot subscribe to ${topic}: cannot ask the server which stream captures it: ${message(cause)}`),
            cause
          })
      }).pipe(
        Effect.flatMap((streams) => chooseFrom(topic, group, streams)),
        Effect.tap((name) => Effect.sync(() => cache.set(topic, name)))
      )
    })

  /**
   * Changes the primary stream's subjects on the server and in the routes (answers learned from the server go). A
   * stream update replaces the whole subject list, so two instances changing it at once can undo each other's change:
   * the result is read back and the change made again until it holds (a few rounds at most).
   */
  const changeSubjects = (subject: string, change: (subjects: ReadonlyArray<string>) => Array<string>, what: string) =>
    Effect.tryPromise({
      try: async () => {
        const holds = (have: ReadonlyArray<string>) => {
          const want = change(have)
          return want.length === have.length && want.every((s) => have.includes(s))
        }
        let subjects: ReadonlyArray<string> = []
        for (let round = 0; round < 5; round++) {
          const config = (await jsm.streams.info(primary)).config
          subjects = config.subjects ?? []
          if (holds(subjects)) break
          subjects = (await jsm.streams.update(primary, { ...config, subjects: change(subjects) })).config.subjects ?? []
        }
        known = known.map((k) => k.name === primary ? { ...k, subjects } : k)
        cache.clear()
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
    get known() {
      return known
    },
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
