/**
 * `@cqbus/testkit`: the conformance suite every cqbus backend passes, and the helpers to run bus programs in tests
 * under virtual or real time. The CQC example events live at `@cqbus/testkit/events`, and the `nats-server` and
 * cluster launchers for tests at `@cqbus/testkit/nats-server` and `@cqbus/testkit/nats-cluster`.
 *
 * @module
 */
export { conformance, type ConformanceOptions, type Features } from "./Conformance.ts"
export {
  NatsClusterError,
  type NatsClusterErrorReason,
  NatsServerError,
  type NatsServerErrorReason,
  WaitTimeout
} from "./Errors.ts"
export { failureOf, letTimePass, runScoped, testDelivery, type TimeMode, waitUntil } from "./Harness.ts"
export { type CapturedLogs, captureLogs, type LogLine } from "./Logs.ts"
