/**
 * `@cqbus/core/backend`: what sibling packages (backends, plugins, the code generator) need of the core and
 * applications do not: the wire envelope, topic and pattern helpers, option checks, error helpers, redaction and
 * the port's types for implementing a `Transport`. Kept apart from the main entry so that entry lists what users
 * write, as nats.js keeps `internal_mod.ts` apart from `mod.ts`.
 *
 * @module
 */
export { envelopeHeaders, type EnvelopeAttributes, readHeader } from "./Envelope.ts"
export { errorMessage, errorTag, TaggedErrorBase } from "./Errors.ts"
export { checkEventBusConfig } from "./internal/checks.ts"
export { printable } from "./internal/printable.ts"
export * as Options from "./Options.ts"
export { makeRedactor, redactDeep, redactSecrets } from "./Redact.ts"
export { checkTopic, compilePattern, snakeCase } from "./Topic.ts"
export type {
  ConnectionWatch,
  ConsumeOptions,
  FetchRequest,
  IncomingMessage,
  OutgoingMessage,
  TransportShape
} from "./Transport.ts"
