/**
 * The `/health` router: a Hono sub-app that answers liveness, readiness and a full report in the IETF
 * `application/health+json` format (draft-inadarei-api-health-check), from the bus and the optional capabilities of
 * its `Transport` (connection state, consumer backlog, draining), a heartbeat, and checks of your own.
 *
 * Every check is an Effect run through the runtime you pass, each under its own timeout, all at once; a check that
 * fails, dies or times out reports `fail` with a reason, never an error page. Every text of a response passes
 * through a redactor, so a credential quoted in an error message never leaves the process.
 *
 * @module
 */
import { type EventBus, type Transport } from "@cqbus/core"
import { errorMessage, Options, redactDeep } from "@cqbus/core/backend"
import { type Context, Duration, Effect, Exit, Redacted } from "effect"
import { Hono } from "hono"
import type { CheckResult, HealthCheck, HealthStatus, Observation } from "./HealthCheck.ts"
import {
  backlogCheck,
  backlogStatesCheck,
  busCheck,
  causeMessage,
  connectionCheck,
  drainingCheck,
  heartbeatCheck,
  type NamedCheck
} from "./internal/checks.ts"
import { runnerOf } from "./internal/runner.ts"

/**
 * A health response (`application/health+json`).
 *
 * @since 0.1.0
 * @category models
 */
export interface HealthResponse {
  readonly status: HealthStatus
  readonly version?: string
  readonly releaseId?: string
  readonly serviceId?: string
  readonly description?: string
  readonly output?: string
  /** Check objects keyed `component:measurement` (e.g. `bus:responseTime`), one or more per key. */
  readonly checks: Readonly<Record<string, ReadonlyArray<CheckResult>>>
}

/**
 * What the router runs its Effects with: a `ManagedRuntime` (anything with its `runPromise`), or a `Context` with
 * the services.
 *
 * @since 0.1.0
 * @category models
 */
export type HealthRuntime<R> =
  | {
    readonly runPromise: <A, E>(effect: Effect.Effect<A, E, R>, options?: Effect.RunOptions) => Promise<A>
  }
  | Context.Context<R>

/**
 * Options of `healthRouter`.
 *
 * @since 0.1.0
 * @category models
 */
export interface HealthRouterOptions<R = never> {
  /** Runs the checks. It must provide `EventBus` and `Transport` (every cqbus bus layer does) and what `checks` need. */
  readonly runtime: HealthRuntime<R | EventBus.EventBus | Transport.Transport>
  /** Checks of your own, after the bus checks. */
  readonly checks?: ReadonlyArray<HealthCheck<R>>
  /** The longest a check may take before it reports `fail` (default 2 seconds). */
  readonly timeout?: Duration.Input
  /**
   * Thresholds on each live consumer's `pending` messages (stored, not yet delivered) for `consumers:backlog`:
   * at or above `warn` the check warns, at or above `fail` it fails (default `warn: 10_000`, no `fail`).
   * `states: true` instead takes each consumer's level from the backlog monitor the runtime provides (core's `Backlog`
   * service, e.g. `BacklogMonitor.layer` of `@cqbus/metrics`): `warning` warns, `critical` fails; `warn` and `fail`
   * do not apply then.
   */
  readonly backlog?: { readonly warn?: number; readonly fail?: number; readonly states?: boolean }
  /**
   * Where the `heartbeat:responseTime` check runs when the runtime provides `Heartbeat`: `"full"` (default: the full
   * report only, since each probe stores a message), `"ready"` (also `/ready`) or `false` (never).
   */
  readonly heartbeat?: "full" | "ready" | false
  /** Top-level fields of every response. */
  readonly service?: {
    readonly serviceId?: string
    readonly version?: string
    readonly releaseId?: string
    readonly description?: string
  }
  /**
   * Values masked wherever they would appear in a response (passwords, tokens), on top of the shapes masked anyway:
   * credentials in URLs, `password=`/`token:`-style pairs, bearer tokens, NATS seeds and JWTs.
   */
  readonly secrets?: ReadonlyArray<string | Redacted.Redacted<string>>
}

/**
 * The content type of every response.
 *
 * @since 0.1.0
 * @category constants
 */
export const HEALTH_CONTENT_TYPE: string = "application/health+json"

const RANK: Record<HealthStatus, number> = { pass: 0, warn: 1, fail: 2 }

const worst = (statuses: Iterable<HealthStatus>): HealthStatus => {
  let result: HealthStatus = "pass"
  for (const status of statuses) if (RANK[status] > RANK[result]) result = status
  return result
}

const backlogRange = { min: 1, max: Options.MAX_COUNT }

/** The accepted range of each option (docs/reliability.md, "Options"). */
const checkOptions = (options: unknown): Options.Check =>
  Options.fields("healthRouter", options, (o) =>
    Options.first(
      () =>
        typeof o.runtime === "object" && o.runtime !== null
          ? undefined
          : { option: "healthRouter.runtime", message: `healthRouter.runtime must be a ManagedRuntime or a Context, got ${Options.show(o.runtime)}` },
      () =>
        Options.list("healthRouter.checks", o.checks, (option, check) =>
          Options.fields(option, check, (c) =>
            Options.first(
              () => Options.text(`${option}.name`, c.name, { maxLength: 256 }),
              () => Effect.isEffect(c.run) ? undefined : { option: `${option}.run`, message: `${option}.run must be an Effect, got ${Options.show(c.run)}` },
              () => Options.boolean(`${option}.ready`, c.ready),
              () => Options.duration(`${option}.timeout`, c.timeout, Options.Ranges.timeout)
            ))),
      () => Options.duration("healthRouter.timeout", o.timeout, Options.Ranges.timeout),
      () =>
        Options.fields("healthRouter.backlog", o.backlog, (backlog) =>
          Options.first(
            () => Options.integer("healthRouter.backlog.warn", backlog.warn, backlogRange),
            () => Options.integer("healthRouter.backlog.fail", backlog.fail, backlogRange),
            () => Options.boolean("healthRouter.backlog.states", backlog.states),
            () =>
              backlog.states === true && (backlog.warn !== undefined || backlog.fail !== undefined)
                ? {
                  option: `healthRouter.backlog.${backlog.warn !== undefined ? "warn" : "fail"}`,
                  message: `healthRouter.backlog.${backlog.warn !== undefined ? "warn" : "fail"} does not apply with ` +
                    "healthRouter.backlog.states: true (the backlog monitor's thresholds decide)"
                }
                : undefined
          )),
      () => Options.oneOf("healthRouter.heartbeat", o.heartbeat, ["full", "ready", false]),
      () => Options.record("healthRouter.service", o.service, (option, v) => Options.text(option, v, { maxLength: 1024 })),
      // Secrets are never shown, not even when they are the wrong type.
      () =>
        Options.list("healthRouter.secrets", o.secrets, (option, v) =>
          typeof v === "string" || Redacted.isRedacted(v)
            ? undefined
            : { option, message: `${option} must be a string or a Redacted string` })
    ))

/**
 * A Hono app with `GET /` (the full report), `GET /live` (liveness: answers without touching any dependency) and
 * `GET /ready` (readiness: the bus `check`, the connection state, draining, the consumer backlog and your checks marked
 * `ready`), to mount with `app.route("/health", healthRouter(...))`. Responses are `application/health+json` with
 * `Cache-Control: no-store`; the status is the worst of the checks, and `fail` answers 503 (`pass` and `warn`: 200).
 *
 * Bus checks (each left out when the transport lacks the capability): `bus:responseTime` (the bus `check`, timed),
 * `bus:connection` (`fail` unless connected), `bus:draining` (`fail` while shutting down), `consumers:backlog` (one
 * entry per live consumer, by its undelivered messages, or by the backlog monitor's level with
 * `backlog: { states: true }`), and `heartbeat:responseTime` when the runtime provides `Heartbeat`.
 *
 * @example
 * ```ts
 * import { EventBus } from "@cqbus/core"
 * import { healthRouter } from "@cqbus/health"
 * import { ManagedRuntime } from "effect"
 * import { Hono } from "hono"
 *
 * const runtime = ManagedRuntime.make(EventBus.layerMemory())
 * const app = new Hono().route("/health", healthRouter({ runtime }))
 * const response = await app.request("/health/ready") // 200, {"status":"pass","checks":{"bus:responseTime":[...]}}
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const healthRouter = <R = never>(options: HealthRouterOptions<R>): Hono => {
  Options.orThrow(checkOptions(options))
  const run = runnerOf(options.runtime)
  const timeout = Duration.fromInputUnsafe(options.timeout ?? "2 seconds")
  const secrets = options.secrets ?? []
  const heartbeat = options.heartbeat ?? "full"
  const checks: ReadonlyArray<NamedCheck<R | EventBus.EventBus | Transport.Transport>> = [
    busCheck,
    connectionCheck,
    drainingCheck,
    options.backlog?.states === true
      ? backlogStatesCheck
      : backlogCheck({ warn: options.backlog?.warn ?? 10_000, fail: options.backlog?.fail ?? Infinity }),
    ...(options.checks ?? []).map((check): NamedCheck<R> => ({
      name: check.name,
      ready: check.ready ?? true,
      timeout: check.timeout === undefined ? undefined : Duration.fromInputUnsafe(check.timeout),
      run: check.run
    })),
    ...(heartbeat === false ? [] : [heartbeatCheck(heartbeat === "ready")])
  ]
  const service = options.service ?? {}
  const startedAt = Date.now()

  const runCheck = (
    check: NamedCheck<R | EventBus.EventBus | Transport.Transport>
  ): Effect.Effect<readonly [string, ReadonlyArray<CheckResult>], never, R | EventBus.EventBus | Transport.Transport> => {
    const limit = check.timeout ?? timeout
    return Effect.gen(function*() {
      const exit = yield* Effect.exit(Effect.timeoutOrElse(check.run, {
        duration: limit,
        orElse: () => Effect.fail(new Error(`did not finish within ${Duration.toMillis(limit)} ms`))
      }))
      const time = new Date(yield* Effect.clockWith((clock) => clock.currentTimeMillis)).toISOString()
      if (Exit.isFailure(exit)) return [check.name, [{ status: "fail", output: causeMessage(exit.cause), time }]] as const
      const value = exit.value
      const observations: ReadonlyArray<Observation> = value === undefined ? [{}] : Array.isArray(value) ? value : [value as Observation]
      return [check.name, observations.map((o): CheckResult => ({ ...o, status: o.status ?? "pass", time }))] as const
    })
  }

  const report = (ready: boolean): Effect.Effect<HealthResponse, never, R | EventBus.EventBus | Transport.Transport> =>
    Effect.map(
      Effect.all(checks.filter((c) => !ready || c.ready).map(runCheck), { concurrency: "unbounded" }),
      (results) => {
        const entries = results.filter(([, list]) => list.length > 0)
        return {
          status: worst(entries.flatMap(([, list]) => list.map((r) => r.status))),
          ...service,
          checks: Object.fromEntries(entries)
        }
      }
    )

  const respond = (body: HealthResponse): Response =>
    new Response(JSON.stringify(redactDeep(body, secrets)), {
      status: body.status === "fail" ? 503 : 200,
      headers: { "content-type": HEALTH_CONTENT_TYPE, "cache-control": "no-store" }
    })

  const answer = (ready: boolean) => async (request: Request): Promise<Response> => {
    try {
      return respond(await run(report(ready), { signal: request.signal }))
    } catch (cause) {
      // The runtime itself is unusable (its layer failed to build, or it was disposed): that is a failed check too.
      return respond({ status: "fail", ...service, output: `cannot run the checks: ${errorMessage(cause)}`, checks: {} })
    }
  }

  const full = answer(false)
  const readiness = answer(true)
  return new Hono()
    .get("/", (c) => full(c.req.raw))
    .get("/ready", (c) => readiness(c.req.raw))
    // Liveness must not depend on anything outside the process: a broker outage would otherwise get every instance
    // restarted at once, which helps nobody. It only says the process serves HTTP, and for how long.
    .get("/live", () =>
      respond({
        status: "pass",
        ...service,
        checks: {
          uptime: [{
            status: "pass",
            componentType: "system",
            observedValue: Math.round((Date.now() - startedAt) / 1000),
            observedUnit: "s",
            time: new Date().toISOString()
          }]
        }
      }))
}
