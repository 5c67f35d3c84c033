/**
 * `@cqbus/health`: a Hono `/health` router for cqbus services — liveness, readiness from the bus and its transport
 * (connection, consumer backlog, draining), a publish/subscribe heartbeat and checks of your own, answered as
 * `application/health+json`.
 *
 * @module
 */
export { deadLetterRouter, type DeadLetterRouterOptions } from "./DeadLetterRouter.ts"
export type { CheckResult, HealthCheck, HealthStatus, Observation } from "./HealthCheck.ts"
export {
  HEALTH_CONTENT_TYPE,
  healthRouter,
  type HealthResponse,
  type HealthRouterOptions,
  type HealthRuntime
} from "./HealthRouter.ts"
export * as Heartbeat from "./Heartbeat.ts"
export type { HeartbeatOptions, HeartbeatShape } from "./Heartbeat.ts"
