/**
 * Peer-controlled text (an event id from a `ce-id` header, which any client allowed to publish chooses) made safe to
 * put inside a log line: a CR or LF in it would otherwise start a forged line of its own, and a 32 KiB value would
 * drown the line it is in.
 */

/** Longest part of a peer's value kept in a log line, in UTF-16 units; the rest is cut and counted. */
const MAX_LENGTH = 256

/** C0 controls, DEL, C1 controls and the Unicode line and paragraph separators. */
// eslint-disable-next-line no-control-regex
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g

const escape = (c: string): string => {
  switch (c) {
    case "\r":
      return "\\r"
    case "\n":
      return "\\n"
    case "\t":
      return "\\t"
    default:
      return `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`
  }
}

/**
 * `text` with every control character and line separator written as an escape (`\r`, `\n`, `\t`, `\u0000`) and cut
 * to 256 characters (`…(+N)` says how many more there were), so it stays inside the one log line it is put in.
 * Printable text, the common case, is returned as it is.
 *
 * @example
 * ```ts
 * import { printable } from "@cqbus/core/backend"
 *
 * printable("a\r\nlevel=error msg=forged") // "a\\r\\nlevel=error msg=forged"
 * ```
 */
export const printable = (text: string): string => {
  const cut = text.length > MAX_LENGTH ? `${text.slice(0, MAX_LENGTH)}…(+${text.length - MAX_LENGTH})` : text
  UNPRINTABLE.lastIndex = 0
  return UNPRINTABLE.test(cut) ? cut.replace(UNPRINTABLE, escape) : cut
}
