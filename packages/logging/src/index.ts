/**
 * `@cqbus/logging`: structured logs through the Effect `Logger` for every delivery (`logging`, a handler middleware)
 * and every publish (`loggingPublish`, a publish middleware). Lines carry OpenTelemetry semantic-convention
 * annotations (`messaging.destination.name`, `messaging.message.id`, ...) plus `cqbus.*` ones, durations are measured
 * on Effect's `Clock` (so a `TestClock` gives exact numbers), and every outcome's level can be changed or silenced.
 * Payloads are never logged unless asked for, and headers only from an allow-list that can never let credentials
 * through.
 *
 * @module
 */
export {
  logging,
  type LoggingLevel,
  type LoggingLevels,
  type LoggingOptions,
  loggingPublish,
  type LoggingPublishLevels,
  type LoggingPublishOptions
} from "./Logging.ts"
