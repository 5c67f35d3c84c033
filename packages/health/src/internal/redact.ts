/**
 * Removing secrets from text a health response carries. A health endpoint is often reachable by more people than the
 * service's configuration (load balancers, dashboards, status pages), and error texts of clients and drivers like to
 * quote the URL they failed on, credentials included. So every string of a response passes through here.
 *
 * @module
 */
import { Redacted } from "effect"

const MASK = "***"

// Credentials written into a URL: `nats://user:pass@host`, `nats://token@host`, `https://user@host`.
const URL_USERINFO = /\b([a-z][a-z0-9+.-]*:\/\/)[^@/\s"']+@/gi
// `password=…`, `token: …`, `"apiKey":"…"`, `auth_token=…`: the name of a secret, then its value.
const KEY_VALUE =
  /\b([a-z0-9_-]*(?:password|passwd|pwd|secret|token|api[-_]?key|access[-_]?key|authorization|credentials?|creds|nkey|seed|jwt))(["']?\s*[=:]\s*["']?)([^\s"'&,;)}\]]+)/gi
// `Authorization: Bearer …` values quoted on their own.
const SCHEME_TOKEN = /\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+/g
// NATS nkey seeds (S + a type letter, base32) and JWTs (three base64url parts, the first one a JSON header).
const NKEY_SEED = /\bS[UAOCNPX][A-Z2-7]{50,}\b/g
const JWT = /\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+/g

/**
 * A function that masks known secret shapes and the given literal secrets in a text. Literal secrets are matched
 * longest first, so a secret containing another is masked whole.
 */
export const makeRedactor = (
  secrets: ReadonlyArray<string | Redacted.Redacted<string>>
): (text: string) => string => {
  const literals = secrets
    .map((secret) => (Redacted.isRedacted(secret) ? Redacted.value(secret) : secret))
    .filter((secret) => secret.length > 0)
    .sort((a, b) => b.length - a.length)
  return (text) => {
    let out = text
    for (const literal of literals) out = out.split(literal).join(MASK)
    return out
      .replace(URL_USERINFO, `$1${MASK}@`)
      // Before the key/value pass, which would take `Bearer` for the value of `Authorization:` and leave the token.
      .replace(SCHEME_TOKEN, `$1 ${MASK}`)
      .replace(KEY_VALUE, `$1$2${MASK}`)
      .replace(NKEY_SEED, MASK)
      .replace(JWT, MASK)
  }
}

/** Applies `redact` to every string (keys included) of a JSON-like value. */
export const redactDeep = <A>(value: A, redact: (text: string) => string): A => {
  const walk = (v: unknown): unknown => {
    if (typeof v === "string") return redact(v)
    if (Array.isArray(v)) return v.map(walk)
    if (v !== null && typeof v === "object") {
      return Object.fromEntries(Object.entries(v).map(([key, inner]) => [redact(key), walk(inner)]))
    }
    return v
  }
  return walk(value) as A
}
