// `printable`: peer-controlled text kept inside one log line.
import { printable } from "@cqbus/core/backend"
import assert from "node:assert/strict"
import { test } from "node:test"

test("printable escapes control characters and line separators, keeps printable text as it is, and cuts long values", () => {
  assert.equal(printable("evt-1 ü €"), "evt-1 ü €")
  assert.equal(printable("a\r\nb\tc\u0000d\u007fe\u2028f"), "a\\r\\nb\\tc\\u0000d\\u007fe\\u2028f")
  assert.equal(printable("x".repeat(300)), `${"x".repeat(256)}…(+44)`)
  assert.equal(printable(""), "")
})
