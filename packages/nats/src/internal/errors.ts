/**
 * The one place where nats.js errors become cqbus errors. Nothing from nats.js crosses the package boundary; each
 * error is classified by nats.js's own vocabulary (its error classes and JetStream API codes) and says whether
 * retrying can help.
 */
import { DeadLetterError, HealthError, PublishError, type PublishErrorReason, SubscribeError } from "@cqbus/core"
import { redactSecrets } from "@cqbus/core/backend"
import { type ApiError, JetStreamApiError, JetStreamError } from "@nats-io/jetstream"
import { errors } from "@nats-io/nats-core"
import { NatsError } from "../NatsError.ts"

/** JetStream API error codes this package reacts to (nats-server's `errors.json`). */
export const ApiCodes = {
  ConsumerNotFound: 10014,
  StreamNotFound: 10059,
  MessageTooLarge: 10054,
  StreamFull: 10077,
  WrongLastSequence: 10071,
  StreamNameInUse: 10058,
  SubjectsOverlap: 10065,
  ConsumerFilterNotSubset: 10093
} as const

/** The message of a foreign error (or the text of anything thrown). */
export const message = (cause: unknown): string => cause instanceof Error ? cause.message : String(cause)

/** Follows `cause` links: nats.js wraps timeouts and no-responders in `RequestError`. */
export const causes = (cause: unknown): ReadonlyArray<unknown> => {
  const chain: Array<unknown> = []
  let current = cause
  while (current !== undefined && chain.length < 5) {
    chain.push(current)
    current = current instanceof Error ? current.cause : undefined
  }
  return chain
}

const classify = (cause: unknown): { readonly reason: PublishErrorReason; readonly retriable: boolean } => {
  for (const error of causes(cause)) {
    if (error instanceof errors.ClosedConnectionError || error instanceof errors.DrainingConnectionError) {
      return { reason: "Closed", retriable: false }
    }
    if (error instanceof errors.TimeoutError) return { reason: "Timeout", retriable: true }
    if (error instanceof errors.NoRespondersError) return { reason: "NoStream", retriable: false }
    if (error instanceof errors.RequestError && error.isNoResponders()) return { reason: "NoStream", retriable: false }
    if (error instanceof errors.PermissionViolationError || error instanceof errors.AuthorizationError) {
      return { reason: "PermissionDenied", retriable: false }
    }
    if (error instanceof errors.ConnectionError) return { reason: "NotConnected", retriable: true }
    if (error instanceof JetStreamApiError) {
      switch (error.code) {
        case ApiCodes.MessageTooLarge:
          return { reason: "TooLarge", retriable: false }
        case ApiCodes.StreamFull:
          return { reason: "StreamFull", retriable: true }
        case ApiCodes.WrongLastSequence:
          return { reason: "WrongLastSequence", retriable: false }
        case ApiCodes.StreamNotFound:
          return { reason: "NoStream", retriable: false }
      }
      // "JetStream system temporarily unavailable" and its kind: the cluster is between leaders.
      if (error.status === 503) return { reason: "Unavailable", retriable: true }
    }
  }
  return { reason: "Unknown", retriable: true }
}

/** What to do about a topic no stream captures, the same advice for publish and subscribe. */
export const ADD_A_STREAM = "add a stream that captures it (the bus's streams, or stream.subjects of its own stream)"

const explain: Record<PublishErrorReason, string> = {
  Closed: "the connection is closed",
  Encode: "the message could not be encoded",
  MissingKey: "the event's ordering key is empty",
  InvalidOptions: "a publish option is out of range",
  NoStream:
    `no stream captures this topic (or JetStream is not answering); ${ADD_A_STREAM}, or publish on a topic a stream captures`,
  TooLarge: "the message is larger than the server or stream allows",
  StreamFull: "the stream is full and discards new messages",
  WrongLastSequence: "the stream's last sequence is not the expected one",
  PermissionDenied: "this connection may not publish to the subject",
  Timeout: "no PubAck arrived in time; the message may or may not be stored (publishing again with the same event id is safe)",
  NotConnected: "the client is not connected to a server",
  Unavailable:
    "the stream exists but has no leader to store the message (a JetStream leader election, or too few servers up); publishing again shortly is safe",
  Unknown: "an unexpected error"
}

const publishError = (
  cause: unknown,
  topic: string,
  { reason, retriable }: { readonly reason: PublishErrorReason; readonly retriable: boolean }
): PublishError =>
  new PublishError({
    topic,
    reason,
    retriable,
    message: `cannot publish to ${topic}: ${explain[reason]} (${message(cause)})`,
    cause
  })

/** A publish failure as a typed `PublishError`. */
export const toPublishError = (cause: unknown, topic: string): PublishError => publishError(cause, topic, classify(cause))

/**
 * Failures the publish engine (`publisher.ts`) detects itself — a refused header, an oversized message, a PubAck
 * carrying an API error, a no-responders status, a missed deadline, a lost or closed connection — told apart by where
 * they happen, or expressed as the nats.js errors they stand for, so they take the same classification as the errors
 * nats.js throws and keep a nats.js error as their `cause`.
 */
export const publishFailure = {
  /** The header encoder refused a name or value (as nats.js's would): sending again cannot help. */
  encode: (cause: unknown, topic: string): PublishError =>
    publishError(cause, topic, { reason: "Encode", retriable: false }),
  /**
   * `nc.publish` threw. Its one argument error is a message over the server's `max_payload` (nats.js 3.3: the
   * subject checks throw `InvalidSubjectError`); the rest (closed, draining) classify as usual.
   */
  refused: (cause: unknown, topic: string): PublishError =>
    cause instanceof errors.InvalidArgumentError
      ? publishError(cause, topic, { reason: "TooLarge", retriable: false })
      : toPublishError(cause, topic),
  /** The PubAck is a JetStream API error (`{"error":{"code":..,"err_code":..,"description":..}}`). */
  api: (error: ApiError, topic: string): PublishError => toPublishError(new JetStreamApiError(error), topic),
  /** A `503` status instead of a PubAck: nothing subscribes to the subject, i.e. no stream captures it. */
  noResponders: (topic: string): PublishError => toPublishError(new errors.NoRespondersError(topic), topic),
  /**
   * A `503` status for a subject a stream does capture (or while JetStream cannot say): the stream has no leader right
   * now, e.g. during an election after its leader went away. The server answers "no responders" then, as for a
   * subject no stream captures; `detail` says how the two were told apart.
   */
  unavailable: (topic: string, detail: string): PublishError =>
    new PublishError({
      topic,
      reason: "Unavailable",
      retriable: true,
      message: `cannot publish to ${topic}: ${explain.Unavailable} (${detail})`,
      cause: new errors.NoRespondersError(topic)
    }),
  /** A reply that is neither a PubAck nor a known status. */
  invalid: (topic: string, what: string): PublishError =>
    toPublishError(new JetStreamError(`invalid PubAck: ${what}`), topic),
  /** The deadline passed before the PubAck arrived. */
  timeout: (topic: string): PublishError => toPublishError(new errors.TimeoutError(), topic),
  /** The deadline passed before a slot in the window or a connection was free: the message was never sent. */
  notSent: (topic: string, connected: boolean): PublishError =>
    toPublishError(
      connected
        ? new errors.TimeoutError({ cause: new Error("the message waited for a free publish slot and was never sent") })
        : new errors.ConnectionError("the message was never sent: no connection within the publish timeout"),
      topic
    ),
  /** The connection dropped while the PubAck was outstanding: it cannot arrive any more. */
  lost: (topic: string): PublishError =>
    toPublishError(
      new errors.ConnectionError(
        "the connection was lost before the PubAck arrived; the message may or may not be stored (publishing again with the same event id is safe)"
      ),
      topic
    ),
  closed: (topic: string): PublishError => toPublishError(new errors.ClosedConnectionError(), topic)
}

/** The subject of a publish the server refused for lack of permission (an asynchronous `-ERR`), if `error` is one. */
export const deniedPublishSubject = (error: unknown): string | undefined =>
  error instanceof errors.PermissionViolationError && error.operation === "publish" ? error.subject : undefined

/** The subject of a subscription the server refused for lack of permission, if `error` is one. */
export const deniedSubscribeSubject = (error: unknown): string | undefined =>
  error instanceof errors.PermissionViolationError && error.operation === "subscription" ? error.subject : undefined

/** A consumer set-up failure as a typed `SubscribeError`; `stream` is the stream the consumer was to live on. */
export const toSubscribeError = (
  cause: unknown,
  topic: string,
  group: string | undefined,
  stream?: string
): SubscribeError => {
  const closed = causes(cause).some((e) => e instanceof errors.ClosedConnectionError)
  if (isNotFound(cause, ApiCodes.ConsumerFilterNotSubset)) {
    return new SubscribeError({
      topic,
      group,
      reason: "InvalidOptions",
      message: `cannot subscribe to ${topic}: it is outside the subjects of ${
        stream === undefined ? "the bus's stream" : `stream ${stream}`
      }; ${ADD_A_STREAM}, or subscribe to a topic a stream captures`,
      cause
    })
  }
  if (causes(cause).some((e) => e instanceof errors.PermissionViolationError)) {
    return new SubscribeError({
      topic,
      group,
      reason: "PermissionDenied",
      message: `cannot subscribe to ${topic}${
        group === undefined ? "" : ` as group ${group}`
      }: this connection lacks a permission consuming needs (${message(cause)})`,
      cause
    })
  }
  return new SubscribeError({
    topic,
    group,
    reason: closed ? "Closed" : "Transport",
    message: `cannot subscribe to ${topic}${group === undefined ? "" : ` as group ${group}`}: ${message(cause)}`,
    cause
  })
}

/** Why a connection attempt failed, as `NatsError` reasons, with the problem said in words. */
export interface ConnectProblem {
  readonly reason: "Connect" | "Authentication" | "Tls"
  /** What went wrong, for the error message; `undefined` when the client's own text says it best. */
  readonly problem: string | undefined
}

// Certificate checks that fail on the client side (Node's and OpenSSL's codes; Bun and Deno report the same ones).
const TLS_CODE = /^(?:ERR_TLS_|ERR_SSL_|UNABLE_TO_|CERT_|DEPTH_ZERO_|SELF_SIGNED_|HOSTNAME_MISMATCH|INVALID_CA|INVALID_PURPOSE)/

/**
 * Classifies a failed connect: credentials the server refused (`Authentication`: they will be refused again), a TLS
 * set-up that cannot work (`Tls`: an untrusted or mismatched certificate, TLS on one side only), or anything else
 * (`Connect`: unreachable, refused, timed out — worth waiting for).
 */
export const connectProblem = (cause: unknown): ConnectProblem => {
  for (const error of causes(cause)) {
    if (error instanceof errors.UserAuthenticationExpiredError) {
      return { reason: "Authentication", problem: "the server refused the credentials: they have expired" }
    }
    if (error instanceof errors.AuthorizationError) {
      return { reason: "Authentication", problem: "the server refused the credentials" }
    }
    const code = (error as { readonly code?: unknown } | undefined)?.code
    if (typeof code === "string" && TLS_CODE.test(code)) {
      return { reason: "Tls", problem: "TLS failure: the server's certificate was not accepted" }
    }
    if (error instanceof errors.ConnectionError && /\btls\b/i.test(error.message)) {
      return { reason: "Tls", problem: "TLS failure: the client and the server disagree about TLS" }
    }
  }
  return { reason: "Connect", problem: undefined }
}

/** Connected, but the JetStream API does not answer (not enabled on the server or the account). */
export const toJetStreamUnavailable = (cause: unknown): NatsError =>
  new NatsError({
    reason: "JetStreamUnavailable",
    message: `JetStream is not available on this connection (is the server started with JetStream, and is it enabled for the account?): ${
      redactSecrets(message(cause))
    }`
  })

/** A failed health probe. */
export const toHealthError = (component: string, cause: unknown): HealthError =>
  new HealthError({ component, message: `${component}: ${message(cause)}`, cause })

/** Whether an error says the stream or consumer does not exist. */
export const isNotFound = (cause: unknown, code: number): boolean =>
  causes(cause).some((e) => e instanceof JetStreamApiError && e.code === code)

/**
 * Whether JetStream is not enabled on the server or for the account: its API has no responders, or nats.js says so
 * (its `JetStreamNotEnabled` class is not exported from the package's entry, so it is known by its name).
 */
export const isJetStreamDisabled = (cause: unknown): boolean =>
  causes(cause).some((e) => e instanceof Error && e.name === "JetStreamNotEnabled") || isNoResponders(cause)

/** Whether a request failed because nothing subscribes to its subject ("no responders"). */
export const isNoResponders = (cause: unknown): boolean =>
  causes(cause).some((e) =>
    e instanceof errors.NoRespondersError || (e instanceof errors.RequestError && e.isNoResponders())
  )


/**
 * A failed dead-letter administration request (`what` says which: "list the dead letters of stream X"): the
 * dead-letter stream missing (`Unsupported`: provisioning "skip", or it was deleted), anything else `Transport`.
 */
export const toDeadLetterError = (cause: unknown, what: string, stream: string): DeadLetterError =>
  isNotFound(cause, ApiCodes.StreamNotFound)
    ? new DeadLetterError({
      reason: "Unsupported",
      message: `cannot ${what}: the dead-letter stream ${stream} does not exist`,
      cause
    })
    : new DeadLetterError({ reason: "Transport", message: `cannot ${what}: ${redactSecrets(message(cause))}`, cause })

/**
 * Whether a message request failed because the stream has no message at that sequence: "no message found" (10037),
 * "sequence not found" (10043, deleted) or "stream store EOF" (10057, past the last one).
 */
export const isMissingMessage = (cause: unknown): boolean =>
  causes(cause).some((e) => e instanceof JetStreamApiError && (e.code === 10037 || e.code === 10043 || e.code === 10057))
