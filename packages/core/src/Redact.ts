/**
 * Removing secrets from texts that leave the process: error messages, connection states, health responses. Error
 * texts of clients and drivers like to quote the URL they failed on, credentials included, and a health endpoint is
 * often reachable by more people than the service's configuration. One rule set serves every package, so what counts
 * as a secret is decided in one place.
 *
 * @module
 */
import { Redacted } from "effect"

const MASK = "***"

// Credentials written into a URL: `nats://user:pass@host`, `nats://token@host`, `https://user@host`.
const URL_USERINFO = /\b([a-z][a-z0-9+.-]*:\/\/)[^@/\s"']+@/gi
// `password=…`, `token: …`, `"apiKey":"…"`, `auth_token=…`, `pass=…`: the name of a secret, then its value (a quoted
// value is masked whole, spaces included).
const KEY_VALUE =
  /\b([a-z0-9_-]*(?:password|passwd|pwd|secret|token|api[-_]?key|access[-_]?key|authorization|credentials?|creds|nkey|seed|jwt)|(?:[a-z0-9]+[_-])?pass)(["']?\s*[=:]\s*)("[^"]*"|'[^']*'|[^\s"'&,;)}\]]+)/gi
const maskValue = (match: string, name: string, separator: string, value: string): string => {
  // `Authorization: Bearer ***`: the scheme was left by the bearer-token rule, and is not the secret.
  if (/^(?:Bearer|Basic)$/i.test(value)) return match
  const quote = value[0] === "\"" || value[0] === "'" ? value[0] : ""
  return `${name}${separator}${quote}${MASK}${quote}`
}
// `Authorization: Bearer …` values quoted on their own.
const SCHEME_TOKEN = /\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+/g
// NATS nkey seeds (S + a type letter, base32) and JWTs (three base64url parts, the first one a JSON header).
const NKEY_SEED = /\bS[UAOCNPX][A-Z2-7]{50,}\b/g
const JWT = /\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+/g

/**
 * A function that masks known secret shapes (credentials in URLs, `password=…`-style pairs, bearer tokens, NATS nkey
 * seeds, JWTs) and the given literal secrets in a text. Literal secrets are matched longest first, so a secret
 * containing another is masked whole.
 *
 * @since 0.1.0
 * @category redaction
 */
export const makeRedactor = (
  secrets: ReadonlyArray<string | Redacted.Redacted<string>> = []
): (text: string) => string => {
  const masks = literalMasker(secrets)
  return (text) =>
    masks(text)
      .replace(URL_USERINFO, `$1${MASK}@`)
      // Before the key/value pass, which would take `Bearer` for the value of `Authorization:` and leave the token.
      .replace(SCHEME_TOKEN, `$1 ${MASK}`)
      .replace(KEY_VALUE, maskValue)
      .replace(NKEY_SEED, MASK)
      .replace(JWT, MASK)
}

/** Masks the literal secrets, longest first. */
const literalMasker = (secrets: ReadonlyArray<string | Redacted.Redacted<string>>): (text: string) => string => {
  const literals = secrets
    .map((secret) => (Redacted.isRedacted(secret) ? Redacted.value(secret) : secret))
    .filter((secret) => secret.length > 0)
    .sort((a, b) => b.length - a.length)
  return (text) => {
    let out = text
    for (const literal of literals) out = out.split(literal).join(MASK)
    return out
  }
}

/**
 * Masks known secret shapes in a text (`makeRedactor()` without literal secrets).
 *
 * @since 0.1.0
 * @category redaction
 */
export const redactSecrets: (text: string) => string = makeRedactor()

/**
 * Redacts every string of a JSON-like value: values with all the rules of `makeRedactor(secrets)`; keys, which are
 * names the program chose (check names such as `vault-token:responseTime`), only for the literal secrets and
 * credentials in URLs, since the key/value rules would mangle a name that merely contains "token".
 *
 * @since 0.1.0
 * @category redaction
 */
export const redactDeep = <A>(value: A, secrets: ReadonlyArray<string | Redacted.Redacted<string>> = []): A => {
  const text = makeRedactor(secrets)
  const literals = literalMasker(secrets)
  const key = (name: string): string => literals(name).replace(URL_USERINFO, `$1${MASK}@`)
  const walk = (v: unknown): unknown => {
    if (typeof v === "string") return text(v)
    if (Array.isArray(v)) return v.map(walk)
    if (v !== null && typeof v === "object") {
      return Object.fromEntries(Object.entries(v).map(([name, inner]) => [key(name), walk(inner)]))
    }
    return v
  }
  return walk(value) as A
}
