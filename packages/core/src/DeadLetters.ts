/**
 * Dead-letter administration: list the dead letters with filters and paging, inspect one (its original headers, its
 * body decoded when its type is registered, why and when it was given up on), replay records back to their original
 * topic, and purge by filter. Built once over the transport's `deadLetterStore` capability, so it behaves the same on
 * every backend; a backend without the capability fails each operation with `DeadLetterError` `Unsupported`.
 *
 * Replay republishes a record's original body and headers on its original subject, keeping its event id (`ce-id`)
 * and counting replays in `cqbus-replay-count`. A replay is addressed to one group (header `cqbus-replay-group`): the
 * group that dead-lettered the record unless told otherwise; every other subscription of the topic acknowledges it
 * without running its handler, so a group that processed the event the first time does not process it again. The
 * broker's dedupe id is `<event id>:replay:<count>[:<group>]`, not the event id itself: the original publish used
 * that, and JetStream would drop the replay as its duplicate inside the dedupe window.
 *
 * @module
 */
import { createRegistry, type DescMessage, fromBinary, type Registry, toJson } from "@bufbuild/protobuf"
import { Context, Effect, Layer } from "effect"
import { HeaderNames } from "./Envelope.ts"
import { DeadLetterError, errorMessage, PublishError } from "./Errors.ts"
import type { EventDef } from "./EventDef.ts"
import * as Options from "./Options.ts"
import { checkTopic, compilePattern } from "./Topic.ts"
import {
  type DeadLetterEntry,
  type DeadLetterFilter,
  type DeadLetterPage,
  type DeadLetterStore,
  type Headers,
  Transport,
  type TransportShape
} from "./Transport.ts"

export type { DeadLetterEntry, DeadLetterFilter, DeadLetterPage } from "./Transport.ts"

/**
 * A page request of `list`: a filter, the page size and where to start.
 *
 * @since 0.1.0
 * @category models
 */
export interface ListOptions extends DeadLetterFilter {
  /** The most records on the page (default 100; 1 to 1,000). */
  readonly limit?: number
  /** The `next` of the previous page. */
  readonly cursor?: string
}

/**
 * A record's body decoded with its registered type (`ce-type`), as the protobuf message and as JSON; or why it could
 * not be decoded.
 *
 * @since 0.1.0
 * @category models
 */
export type DecodedBody =
  | { readonly type: string; readonly message: unknown; readonly json: unknown }
  | { readonly type: string; readonly error: string }

/**
 * One dead letter, as `get` returns it: the record and, when its type is registered, its decoded body.
 *
 * @since 0.1.0
 * @category models
 */
export interface DeadLetterRecord extends DeadLetterEntry {
  /** Present when the record's `ce-type` is a registered type. */
  readonly decoded?: DecodedBody
}

/**
 * Options of `replay`.
 *
 * @since 0.1.0
 * @category models
 */
export interface ReplayOptions {
  /**
   * Address every replayed event to this group only. Default: each record goes to the group that dead-lettered it
   * (records without a group go to every subscription).
   */
  readonly group?: string
  /** `true`: every subscription of the topic processes the replayed events, whichever group dead-lettered them. */
  readonly everyGroup?: boolean
  /** Remove each record from the dead letters once its event is republished (default `false`). */
  readonly remove?: boolean
  /** With a filter: the most records this call replays (default 10,000; 1 to 1,000,000). */
  readonly limit?: number
}

/**
 * What `replay` did.
 *
 * @since 0.1.0
 * @category models
 */
export interface ReplayResult {
  /**
   * Records whose event was republished (and removed from the dead letters). On a persistent topic the event is stored
   * anew; on an ephemeral topic nothing is stored, so it reaches only the subscriptions live at that moment — possibly
   * none, and then it is gone.
   */
  readonly replayed: number
  /**
   * Records whose republish the broker dropped as a duplicate: the same record was already replayed to the same
   * group inside the dedupe window.
   */
  readonly duplicates: number
  /** Records removed afterwards (`remove: true`). */
  readonly removed: number
  /** Records that could not be replayed (unknown id, no body stored, a refused publish), with the reason. */
  readonly failures: ReadonlyArray<{ readonly id: string; readonly message: string }>
  /** With a filter: `true` when more records matched than `limit` allowed; call again to replay the rest. */
  readonly more: boolean
}

/**
 * Options of `DeadLetters.layer` and `make`.
 *
 * @since 0.1.0
 * @category models
 */
export interface DeadLettersOptions {
  /** Event definitions whose bodies `get` decodes (by `ce-type`). */
  readonly events?: ReadonlyArray<EventDef>
  /** A protobuf registry whose message types `get` decodes too (e.g. everything generated for a package). */
  readonly registry?: Registry
}

/**
 * The dead-letter administration service.
 *
 * @since 0.1.0
 * @category models
 */
export interface DeadLettersShape {
  /** One page of the records matching the filter, oldest first (`next` continues). */
  readonly list: (options?: ListOptions) => Effect.Effect<DeadLetterPage, DeadLetterError>
  /** One record, with its decoded body when its type is registered; `NotFound` when there is none. */
  readonly get: (id: string) => Effect.Effect<DeadLetterRecord, DeadLetterError>
  /**
   * Republishes records, given by id or by filter, to their original topics (see the module doc for addressing and
   * dedupe). Failures of single records are reported in the result, not as an error.
   */
  readonly replay: (
    selection: ReadonlyArray<string> | DeadLetterFilter,
    options?: ReplayOptions
  ) => Effect.Effect<ReplayResult, DeadLetterError>
  /** Removes every record the filter matches (`{}`: all of them); the count removed. */
  readonly purge: (filter: DeadLetterFilter) => Effect.Effect<number, DeadLetterError>
}

const DeadLettersKey: Context.ServiceClass<DeadLetters, "@cqbus/core/DeadLetters", DeadLettersShape> = Context.Service<
  DeadLetters,
  DeadLettersShape
>()("@cqbus/core/DeadLetters")

/**
 * The `DeadLetters` service: `DeadLetters.layer()` over the `Transport` in context.
 *
 * @since 0.1.0
 * @category services
 */
export class DeadLetters extends DeadLettersKey {}

/** The page size without a `limit`, and the largest accepted. */
const DEFAULT_LIMIT = 100
const MAX_LIMIT = 1000
const DEFAULT_REPLAY_LIMIT = 10_000

const invalid = (message: string): DeadLetterError => new DeadLetterError({ reason: "InvalidQuery", message })

const isDate = (value: unknown): boolean => value instanceof Date && !Number.isNaN(value.getTime())

/** The filter's fields, checked: a malformed one is named. */
const checkFilter = (filter: unknown, option = "filter"): DeadLetterError | undefined => {
  const found = Options.fields(option, filter, (f) =>
    Options.first(
      () => Options.text(`${option}.group`, f.group, { maxLength: 255 }),
      () => Options.text(`${option}.errorTag`, f.errorTag, { maxLength: 255 }),
      () => Options.text(`${option}.reasonContains`, f.reasonContains),
      () =>
        f.from === undefined || isDate(f.from)
          ? undefined
          : { option: `${option}.from`, message: `${option}.from must be a valid Date, got ${Options.show(f.from)}` },
      () =>
        f.to === undefined || isDate(f.to)
          ? undefined
          : { option: `${option}.to`, message: `${option}.to must be a valid Date, got ${Options.show(f.to)}` }
    ))
  if (found !== undefined) return invalid(found.message)
  const topic = (filter as DeadLetterFilter | undefined)?.topic
  if (topic !== undefined) {
    const bad = checkTopic(topic, "pattern")
    if (bad !== undefined) return invalid(`${option}.topic: ${bad.message}`)
  }
  return undefined
}

/**
 * The predicate of a filter: whether a dead letter matches every field given. Backends use it for the fields their
 * broker cannot filter on, so every backend reads a filter the same way.
 *
 * @since 0.1.0
 * @category filters
 */
export const matchesFilter = (filter: DeadLetterFilter): (letter: DeadLetterEntry) => boolean => {
  const topic = filter.topic === undefined ? undefined : compilePattern(filter.topic)
  const reason = filter.reasonContains?.toLowerCase()
  const from = filter.from?.getTime()
  const to = filter.to?.getTime()
  return (letter) => {
    if (topic !== undefined && !topic(letter.subject)) return false
    if (filter.group !== undefined && letter.group !== filter.group) return false
    if (filter.errorTag !== undefined && letter.errorTag !== filter.errorTag) return false
    if (reason !== undefined && !letter.reason.toLowerCase().includes(reason)) return false
    const at = letter.deadLetteredAt.getTime()
    if (from !== undefined && at < from) return false
    if (to !== undefined && at >= to) return false
    return true
  }
}

/** Only the filter's own fields (a `ListOptions` also carries `limit` and `cursor`). */
const filterOf = (options: DeadLetterFilter): DeadLetterFilter => {
  const { errorTag, from, group, reasonContains, to, topic } = options
  return {
    ...(topic === undefined ? {} : { topic }),
    ...(group === undefined ? {} : { group }),
    ...(errorTag === undefined ? {} : { errorTag }),
    ...(reasonContains === undefined ? {} : { reasonContains }),
    ...(from === undefined ? {} : { from }),
    ...(to === undefined ? {} : { to })
  }
}

/** The decoded body of a record whose `ce-type` the registry knows. */
const decodeWith = (registry: Registry, entry: DeadLetterEntry): DecodedBody | undefined => {
  const type = entry.headers[HeaderNames.type]
  if (type === undefined || entry.omitted !== undefined) return undefined
  const schema: DescMessage | undefined = registry.getMessage(type)
  if (schema === undefined) return undefined
  try {
    const message = fromBinary(schema, entry.body)
    return { type, message, json: toJson(schema, message, { registry }) }
  } catch (cause) {
    return { type, error: errorMessage(cause) }
  }
}

/** The headers of a replay: the original ones with the replay count raised and the addressee set (or cleared). */
const replayHeaders = (headers: Headers, count: number, target: string | undefined): Headers => {
  const out: Record<string, string> = {}
  for (const name in headers) {
    // `Nats-*` headers would make the broker act on the republish (dedupe, expected sequences); none is the event's.
    if (name.toLowerCase().startsWith("nats-") || name === HeaderNames.replayGroup) continue
    out[name] = headers[name]!
  }
  out[HeaderNames.replayCount] = String(count)
  if (target !== undefined) out[HeaderNames.replayGroup] = target
  return out
}

/**
 * Builds the service over a transport. Each operation fails with `DeadLetterError` `Unsupported` when the transport
 * has no `deadLetterStore`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (transport: TransportShape, options: DeadLettersOptions = {}): DeadLettersShape => {
  const registry = createRegistry(...(options.registry === undefined ? [] : [options.registry]), ...(options.events ?? []).map((e) => e.schema))
  const store: Effect.Effect<DeadLetterStore, DeadLetterError> = transport.deadLetterStore === undefined
    ? Effect.fail(
      new DeadLetterError({
        reason: "Unsupported",
        message: `the ${transport.name} transport has no dead-letter store to administer`
      })
    )
    : Effect.succeed(transport.deadLetterStore)

  const list: DeadLettersShape["list"] = (options = {}) =>
    Effect.suspend(() => {
      const badPage = Options.first(
        () => Options.integer("list.limit", options.limit, { min: 1, max: MAX_LIMIT }),
        () => Options.text("list.cursor", options.cursor, { maxLength: 256 })
      )
      const bad = checkFilter(options, "list") ?? (badPage === undefined ? undefined : invalid(badPage.message))
      if (bad !== undefined) return Effect.fail(bad)
      return Effect.flatMap(store, (s) =>
        s.list({
          ...filterOf(options),
          limit: options.limit ?? DEFAULT_LIMIT,
          ...(options.cursor === undefined ? {} : { cursor: options.cursor })
        }))
    })

  const entryOf = (s: DeadLetterStore, id: string): Effect.Effect<DeadLetterEntry, DeadLetterError> =>
    Effect.flatMap(s.get(id), (entry) =>
      entry === undefined
        ? Effect.fail(new DeadLetterError({ reason: "NotFound", message: `no dead letter has the id ${JSON.stringify(id)}` }))
        : Effect.succeed(entry))

  const get: DeadLettersShape["get"] = (id) =>
    typeof id !== "string" || id.length === 0
      ? Effect.fail(invalid(`a dead letter id is a non-empty string, got ${Options.show(id)}`))
      : Effect.flatMap(store, (s) =>
        Effect.map(entryOf(s, id), (entry): DeadLetterRecord => {
          const decoded = decodeWith(registry, entry)
          return decoded === undefined ? entry : { ...entry, decoded }
        }))

  /** The ids of the records a filter matches, page by page, up to `limit` (and whether more matched). */
  const idsOf = (s: DeadLetterStore, filter: DeadLetterFilter, limit: number) =>
    Effect.gen(function*() {
      const ids: Array<string> = []
      let cursor: string | undefined
      for (;;) {
        const page = yield* s.list({ ...filter, limit: Math.min(MAX_LIMIT, limit + 1 - ids.length), ...(cursor === undefined ? {} : { cursor }) })
        for (const item of page.items) ids.push(item.id)
        if (ids.length > limit) return { ids: ids.slice(0, limit), more: true }
        if (page.next === undefined) return { ids, more: false }
        cursor = page.next
      }
    })

  const replayOne = (
    s: DeadLetterStore,
    id: string,
    options: ReplayOptions
  ): Effect.Effect<"replayed" | "duplicate" | { readonly failure: string }, DeadLetterError> =>
    Effect.gen(function*() {
      const entry = yield* s.get(id)
      if (entry === undefined) return { failure: `no dead letter has the id ${JSON.stringify(id)}` }
      if (entry.omitted !== undefined) {
        return {
          failure: `the record holds no body (${entry.omitted}); the original is in stream ${entry.stream ?? "?"} at sequence ${
            entry.sequence ?? "?"
          }`
        }
      }
      const count = (Number.parseInt(entry.headers[HeaderNames.replayCount] ?? "0", 10) || 0) + 1
      const target = options.group ?? (options.everyGroup === true ? undefined : entry.group)
      const eventId = entry.headers[HeaderNames.id] ?? `dlq-${id}`
      const published = yield* Effect.result(transport.publish({
        topic: entry.subject,
        body: entry.body,
        headers: replayHeaders(entry.headers, count, target),
        eventId: `${eventId}:replay:${count}${target === undefined ? "" : `:${target}`}`,
        dedupe: true,
        key: entry.headers[HeaderNames.partitionKey]
      }))
      if (published._tag === "Failure") {
        const error = published.failure
        return { failure: error instanceof PublishError ? error.message : errorMessage(error) }
      }
      return published.success.duplicate ? "duplicate" : "replayed"
    })

  const replay: DeadLettersShape["replay"] = (selection, options = {}) =>
    Effect.gen(function*() {
      const bad = Options.first(
        () => Options.fields("replay options", options, (o) =>
          Options.first(
            () => Options.text("replay.group", o.group, { maxLength: 255 }),
            () => Options.boolean("replay.everyGroup", o.everyGroup),
            () => Options.boolean("replay.remove", o.remove),
            () => Options.integer("replay.limit", o.limit, { min: 1, max: 1_000_000 }),
            () =>
              o.group !== undefined && o.everyGroup === true
                ? { option: "replay.group", message: "replay.group and replay.everyGroup exclude each other" }
                : undefined
          )),
        () =>
          Array.isArray(selection)
            ? Options.list("replay ids", selection, (option, id) => Options.text(option, id, { maxLength: 64 }))
            : undefined
      )
      if (bad !== undefined) return yield* invalid(bad.message)
      if (!Array.isArray(selection)) {
        const badFilter = checkFilter(selection, "replay filter")
        if (badFilter !== undefined) return yield* badFilter
      }
      const s = yield* store
      const { ids, more } = Array.isArray(selection)
        ? { ids: selection as ReadonlyArray<string>, more: false }
        : yield* idsOf(s, filterOf(selection as DeadLetterFilter), options.limit ?? DEFAULT_REPLAY_LIMIT)
      let replayed = 0
      let duplicates = 0
      const failures: Array<{ readonly id: string; readonly message: string }> = []
      const done: Array<string> = []
      // One at a time, in id order: a replay keeps the order the events were dead-lettered in.
      for (const id of ids) {
        const outcome = yield* replayOne(s, id, options)
        if (outcome === "replayed") replayed++
        else if (outcome === "duplicate") duplicates++
        else {
          failures.push({ id, message: outcome.failure })
          continue
        }
        done.push(id)
      }
      const removed = options.remove === true && done.length > 0 ? yield* s.remove(done) : 0
      return { replayed, duplicates, removed, failures, more }
    })

  const purge: DeadLettersShape["purge"] = (filter) =>
    Effect.suspend(() => {
      const bad = checkFilter(filter, "purge")
      return bad !== undefined ? Effect.fail(bad) : Effect.flatMap(store, (s) => s.purge(filterOf(filter)))
    })

  return { list, get, replay, purge }
}

/**
 * The `DeadLetters` service over the `Transport` in context.
 *
 * @example
 * ```ts
 * import { DeadLetters, EventBus } from "@cqbus/core"
 * import { AssetCreatedEvent } from "@cqbus/testkit/events"
 * import { Effect, Layer } from "effect"
 *
 * const program = Effect.gen(function*() {
 *   const deadLetters = yield* DeadLetters.DeadLetters
 *   const page = yield* deadLetters.list({ topic: AssetCreatedEvent.topic, errorTag: "Reject", limit: 20 })
 *   return page.items.map((letter) => `${letter.id}: ${letter.reason}`)
 * })
 * const layer = DeadLetters.layer({ events: [AssetCreatedEvent] }).pipe(Layer.provideMerge(EventBus.layerMemory()))
 * Effect.runPromise(Effect.provide(program, layer))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: DeadLettersOptions = {}): Layer.Layer<DeadLetters, never, Transport> =>
  Layer.effect(
    DeadLetters,
    Effect.gen(function*() {
      return make(yield* Transport, options)
    })
  )
