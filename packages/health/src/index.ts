/**
 * `@cqbus/health`: a Hono `/health` router for cqbus services — liveness, readiness from the bus and its transport
 * (connection, consumer backlog, draining), a publish/subscribe heartbeat and checks of your own, answered as
 * `application/health+json`.
 *
 * @module
 */
export {
  type CheckResult,
  HEALTH_CONTENT_TYPE,
  type HealthCheck,
  healthRouter,
  type HealthResponse,
  type HealthRouterOptions,
  type HealthRuntime,
  type HealthStatus,
  type Observation
} from "./HealthRouter.ts"
export { Heartbeat, type HeartbeatOptions, type HeartbeatShape } from "./Heartbeat.ts"
