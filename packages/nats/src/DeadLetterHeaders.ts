/**
 * The header names of a dead-letter record on NATS, besides the original message's own headers. They are public
 * because operators and Go services read dead letters too (docs/wire-format.md).
 *
 * @module
 */

/**
 * Header names of a dead-letter record (besides the original headers).
 *
 * @since 0.1.0
 * @category models
 */
export const DeadLetterHeaders: {
  readonly reason: "cqbus-dlq-reason"
  readonly error: "cqbus-dlq-error"
  readonly deliveries: "cqbus-dlq-deliveries"
  readonly subject: "cqbus-dlq-subject"
  readonly stream: "cqbus-dlq-stream"
  readonly sequence: "cqbus-dlq-sequence"
  readonly group: "cqbus-dlq-group"
  readonly time: "cqbus-dlq-time"
  /**
   * Present when the record was too large with the original's bytes in it (over the server's max_payload): it says
   * what was left out, and the record has no body; the original stays in its stream at `cqbus-dlq-sequence`.
   */
  readonly omitted: "cqbus-dlq-omitted"
} = {
  reason: "cqbus-dlq-reason",
  error: "cqbus-dlq-error",
  deliveries: "cqbus-dlq-deliveries",
  subject: "cqbus-dlq-subject",
  stream: "cqbus-dlq-stream",
  sequence: "cqbus-dlq-sequence",
  group: "cqbus-dlq-group",
  time: "cqbus-dlq-time",
  omitted: "cqbus-dlq-omitted"
}
