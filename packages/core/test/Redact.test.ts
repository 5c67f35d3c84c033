// The one rule set for secrets in texts that leave the process (errors, connection states, health output).
import { makeRedactor, redactDeep, redactSecrets } from "@cqbus/core/backend"
import { Redacted } from "effect"
import assert from "node:assert/strict"
import { test } from "node:test"

test("redact: credentials in URLs, key/value pairs (quoted values whole), bearer tokens, nkey seeds and JWTs", () => {
  assert.equal(redactSecrets("cannot connect to nats://alice:s3cret@10.0.0.1:4222"), "cannot connect to nats://***@10.0.0.1:4222")
  assert.equal(redactSecrets("token@host: nats://t0k3n@host"), "token@host: nats://***@host")
  assert.equal(redactSecrets("password=hunter2&user=bob"), "password=***&user=bob")
  assert.equal(redactSecrets("pass=hunter2 user_pass: x1"), "pass=*** user_pass: ***")
  assert.equal(redactSecrets(`{"apiKey":"k-1","password": 'my pass word'}`), `{"apiKey":"***","password": '***'}`)
  assert.equal(redactSecrets("Authorization: Bearer abc.def-123"), "Authorization: Bearer ***")
  assert.equal(redactSecrets(`seed SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY here`), "seed *** here")
  assert.equal(redactSecrets("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln"), "jwt ***")
  // Words that merely contain a secret's name are left alone.
  assert.equal(redactSecrets("compass heading: 270, status: pass"), "compass heading: 270, status: pass")
})

test("redact: literal secrets are masked longest first, Redacted values included", () => {
  const redact = makeRedactor(["abc", Redacted.make("abcdef"), ""])
  assert.equal(redact("x abcdef y abc z"), "x *** y *** z")
})

test("redactDeep: values get every rule, keys (program-chosen names) only literals and URL credentials", () => {

  const body = {
    status: "fail",
    checks: {
      "vault-token:responseTime": [{ output: "password=hunter2 at nats://u:p@h" }],
      "s3cret:status": [{ observedValue: 3 }]
    }
  }
  assert.deepEqual(redactDeep(body, ["s3cret"]), {
    status: "fail",
    checks: {
      "vault-token:responseTime": [{ output: "password=*** at nats://***@h" }],
      "***:status": [{ observedValue: 3 }]
    }
  })
})
