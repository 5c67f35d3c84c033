/**
 * `@cqbus/testkit`: the conformance suite every cqbus backend passes, and the helpers to run bus programs in tests
 * under virtual or real time. The CQC example events live at `@cqbus/testkit/events`, and a `nats-server` launcher
 * for tests at `@cqbus/testkit/nats-server`.
 *
 * @module
 */
export { conformance, type ConformanceOptions, type Features } from "./Conformance.ts"
export { failureOf, letTimePass, runScoped, testDelivery, type TimeMode, waitUntil } from "./Harness.ts"
export { type CapturedLogs, captureLogs, type LogLine } from "./Logs.ts"
