/**
 * The dead-letter routes: a Hono sub-app over core's `DeadLetters` service, to mount beside `/health`. Reading (list
 * with filters and paging, one record with its decoded body) is always there; replay and purge change the dead
 * letters and the event streams, so they exist only when `mutations: true` is passed. JSON in and out; a failure is
 * a JSON body naming the error's tag (`DeadLetterError` and its reason), with a 4xx/5xx status. Every response passes
 * through the redactor, and header values whose names look like credentials are masked.
 *
 * @module
 */
import { type DeadLetterEntry, DeadLetterError, DeadLetters, type EventDef, Transport } from "@cqbus/core"
import { errorMessage, Options, redactDeep } from "@cqbus/core/backend"
import { Effect, Option, type Redacted, Result } from "effect"
import { Hono } from "hono"
import type { HealthRuntime } from "./HealthRouter.ts"
import { runnerOf } from "./internal/runner.ts"

/**
 * Options of `deadLetterRouter`.
 *
 * @since 0.1.0
 * @category models
 */
export interface DeadLetterRouterOptions<R = never> {
  /**
   * Runs the operations. It must provide `Transport` (every cqbus bus layer does); when it also provides
   * `DeadLetters.DeadLetters`, that service is used (with its registry), else one is built over the transport.
   */
  readonly runtime: HealthRuntime<R | Transport.Transport>
  /** `true` adds `POST /dead-letters/replay` and `DELETE /dead-letters`. Default `false`: read-only. */
  readonly mutations?: boolean
  /** Event definitions whose bodies `GET /dead-letters/:id` decodes (when the runtime provides no `DeadLetters`). */
  readonly events?: ReadonlyArray<EventDef>
  /** A protobuf registry for decoding too (when the runtime provides no `DeadLetters`). */
  readonly registry?: DeadLetters.DeadLettersOptions["registry"]
  /** Values masked wherever they would appear in a response, on top of the shapes masked anyway. */
  readonly secrets?: ReadonlyArray<string | Redacted.Redacted<string>>
}

/** The HTTP status of each `DeadLetterError` reason. */
const STATUS: Record<DeadLetterError["reason"], 400 | 404 | 501 | 503> = {
  InvalidQuery: 400,
  NotFound: 404,
  Unsupported: 501,
  Transport: 503
}

/** Header names whose values are credentials: masked whole in responses. */
const SECRET_HEADER = /authorization|cookie|token|secret|password|passwd|api[-_]?key|credential|signature/i

const maskHeaders = (headers: Readonly<Record<string, string>>): Record<string, string> => {
  const out: Record<string, string> = {}
  for (const name in headers) out[name] = SECRET_HEADER.test(name) ? "***" : headers[name]!
  return out
}

const base64 = (bytes: Uint8Array): string => {
  let binary = ""
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000))
  return btoa(binary)
}

/** A record as JSON, without its body (list pages). */
const summaryOf = (entry: DeadLetterEntry) => ({
  id: entry.id,
  topic: entry.subject,
  group: entry.group ?? null,
  errorTag: entry.errorTag,
  reason: entry.reason,
  deliveryCount: entry.deliveryCount,
  deadLetteredAt: entry.deadLetteredAt.toISOString(),
  stream: entry.stream ?? null,
  sequence: entry.sequence ?? null,
  eventId: entry.headers["ce-id"] ?? null,
  type: entry.headers["ce-type"] ?? null,
  size: entry.body.length,
  ...(entry.omitted === undefined ? {} : { omitted: entry.omitted }),
  headers: maskHeaders(entry.headers)
})

/** The filter fields a request may carry (query string, or `filter` of a replay body). */
const FILTER_FIELDS = ["topic", "group", "errorTag", "reasonContains", "from", "to"] as const

/** A filter from strings (query parameters or JSON), the times parsed; an `InvalidQuery` error for a bad one. */
const filterFrom = (source: Readonly<Record<string, unknown>>, where: string): DeadLetters.DeadLetterFilter | DeadLetterError => {
  const filter: Record<string, unknown> = {}
  for (const field of FILTER_FIELDS) {
    const value = source[field]
    if (value === undefined || value === "") continue
    if (typeof value !== "string") {
      return new DeadLetterError({ reason: "InvalidQuery", message: `${where} ${field} must be a string, got ${Options.show(value)}` })
    }
    if (field === "from" || field === "to") {
      const time = new Date(value)
      if (Number.isNaN(time.getTime())) {
        return new DeadLetterError({ reason: "InvalidQuery", message: `${where} ${field} must be an ISO 8601 time, got ${Options.show(value)}` })
      }
      filter[field] = time
    } else filter[field] = value
  }
  return filter as DeadLetters.DeadLetterFilter
}

/**
 * A Hono app with `GET /dead-letters` (query parameters: `topic` (or a pattern), `group`, `errorTag`,
 * `reasonContains`, `from`, `to` (ISO 8601), `limit`, `cursor`; answers `{ items, next }`), `GET /dead-letters/:id`
 * (the record with its headers, its body in base64 and, for a registered type, `decoded`), and with
 * `mutations: true` also `POST /dead-letters/replay` (body `{ ids } | { filter }` plus `group`, `everyGroup`, `remove`,
 * `limit`; answers the `ReplayResult`) and `DELETE /dead-letters` (the filter as query parameters, at least one, or
 * `all=true`; answers `{ purged }`). Errors answer `{ error: { _tag, reason, message } }`: 400 for a bad query, 404
 * for an unknown id, 501 when the backend has no dead-letter store, 503 when the broker cannot be asked.
 *
 * @example
 * ```ts
 * import { EventBus } from "@cqbus/core"
 * import { deadLetterRouter, healthRouter } from "@cqbus/health"
 * import { ManagedRuntime } from "effect"
 * import { Hono } from "hono"
 *
 * const runtime = ManagedRuntime.make(EventBus.layerMemory())
 * const app = new Hono()
 *   .route("/health", healthRouter({ runtime }))
 *   .route("/admin", deadLetterRouter({ runtime, mutations: true }))
 * const response = await app.request("/admin/dead-letters?errorTag=Reject&limit=20") // 200, {"items":[...]}
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const deadLetterRouter = <R = never>(options: DeadLetterRouterOptions<R>): Hono => {
  Options.orThrow(
    Options.fields("deadLetterRouter", options, (o) =>
      Options.first(
        () =>
          typeof o.runtime === "object" && o.runtime !== null
            ? undefined
            : {
              option: "deadLetterRouter.runtime",
              message: `deadLetterRouter.runtime must be a ManagedRuntime or a Context, got ${Options.show(o.runtime)}`
            },
        () => Options.boolean("deadLetterRouter.mutations", o.mutations),
        () => Options.list("deadLetterRouter.events", o.events, (option, e) => Options.object(option, e))
      ))
  )
  const run = runnerOf(options.runtime)
  const secrets = options.secrets ?? []
  const fallback = {
    ...(options.events === undefined ? {} : { events: options.events }),
    ...(options.registry === undefined ? {} : { registry: options.registry })
  }
  // The runtime's own `DeadLetters` when it has one, else one over its transport (cheap: nothing is read to build it).
  const service: Effect.Effect<DeadLetters.DeadLettersShape, never, Transport.Transport> = Effect.gen(function*() {
    const provided = yield* Effect.serviceOption(DeadLetters.DeadLetters)
    if (Option.isSome(provided)) return provided.value
    return DeadLetters.make(yield* Transport.Transport, fallback)
  })

  const json = (status: number, body: unknown): Response =>
    new Response(JSON.stringify(redactDeep(body, secrets)), {
      status,
      headers: { "content-type": "application/json", "cache-control": "no-store" }
    })

  const failure = (error: unknown): Response =>
    error instanceof DeadLetterError
      ? json(STATUS[error.reason], { error: { _tag: error._tag, reason: error.reason, message: error.message } })
      : json(500, { error: { _tag: "InternalError", message: errorMessage(error) } })

  /**
   * Runs one operation; its typed failure becomes the error response, anything else a 500. Only a read-only request
   * passes its abort signal: a mutation (replay, purge) runs to completion even if the client goes away, so a replay is
   * never cut off between republishing events and removing their records.
   */
  const answer = async <A>(
    request: Request,
    operation: (deadLetters: DeadLetters.DeadLettersShape) => Effect.Effect<A, DeadLetterError>,
    render: (value: A) => unknown
  ): Promise<Response> => {
    try {
      const readOnly = request.method === "GET" || request.method === "HEAD"
      const result = await run(Effect.result(Effect.flatMap(service, operation)), readOnly ? { signal: request.signal } : {})
      return Result.isSuccess(result) ? json(200, render(result.success)) : failure(result.failure)
    } catch (cause) {
      return failure(cause)
    }
  }

  const app = new Hono()
    .get("/dead-letters", (c) => {
      const query = c.req.query()
      const filter = filterFrom(query, "query parameter")
      if (filter instanceof DeadLetterError) return failure(filter)
      const limit = query.limit === undefined ? undefined : /^\d{1,7}$/.test(query.limit) ? Number(query.limit) : Number.NaN
      const list: DeadLetters.ListOptions = {
        ...filter,
        ...(limit === undefined ? {} : { limit }),
        ...(query.cursor === undefined ? {} : { cursor: query.cursor })
      }
      return answer(c.req.raw, (d) => d.list(list), (page) => ({
        items: page.items.map(summaryOf),
        next: page.next ?? null
      }))
    })
    .get("/dead-letters/:id", (c) =>
      answer(c.req.raw, (d) => d.get(c.req.param("id")), (record) => ({
        ...summaryOf(record),
        body: base64(record.body),
        decoded: record.decoded === undefined
          ? null
          : "json" in record.decoded
          ? { type: record.decoded.type, json: record.decoded.json }
          : { type: record.decoded.type, error: record.decoded.error }
      })))
  if (options.mutations !== true) return app

  return app
    .post("/dead-letters/replay", async (c) => {
      let body: unknown
      try {
        body = await c.req.json()
      } catch {
        return failure(new DeadLetterError({ reason: "InvalidQuery", message: "the request body must be a JSON object" }))
      }
      if (typeof body !== "object" || body === null || Array.isArray(body)) {
        return failure(new DeadLetterError({ reason: "InvalidQuery", message: "the request body must be a JSON object" }))
      }
      const { everyGroup, filter, group, ids, limit, remove } = body as Record<string, unknown>
      if ((ids === undefined) === (filter === undefined)) {
        return failure(new DeadLetterError({ reason: "InvalidQuery", message: "give either ids (a list) or filter (an object)" }))
      }
      let selection: ReadonlyArray<string> | DeadLetters.DeadLetterFilter
      if (ids !== undefined) {
        if (!Array.isArray(ids)) return failure(new DeadLetterError({ reason: "InvalidQuery", message: "ids must be a list of ids" }))
        selection = ids as ReadonlyArray<string>
      } else {
        if (typeof filter !== "object" || filter === null || Array.isArray(filter)) {
          return failure(new DeadLetterError({ reason: "InvalidQuery", message: "filter must be an object" }))
        }
        const parsed = filterFrom(filter as Record<string, unknown>, "filter")
        if (parsed instanceof DeadLetterError) return failure(parsed)
        selection = parsed
      }
      const replay = { group, everyGroup, remove, limit } as DeadLetters.ReplayOptions
      const defined = Object.fromEntries(Object.entries(replay).filter(([, v]) => v !== undefined)) as DeadLetters.ReplayOptions
      return answer(c.req.raw, (d) => d.replay(selection, defined), (result) => result)
    })
    .delete("/dead-letters", (c) => {
      const query = c.req.query()
      const filter = filterFrom(query, "query parameter")
      if (filter instanceof DeadLetterError) return failure(filter)
      // An empty filter would remove everything: only on explicit request.
      if (Object.keys(filter).length === 0 && query.all !== "true") {
        return failure(
          new DeadLetterError({
            reason: "InvalidQuery",
            message: `give at least one filter (${FILTER_FIELDS.join(", ")}), or all=true to purge every dead letter`
          })
        )
      }
      return answer(c.req.raw, (d) => d.purge(filter), (purged) => ({ purged }))
    })
}
