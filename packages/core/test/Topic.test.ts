import assert from "node:assert/strict"
import { test } from "node:test"
import { Effect } from "effect"
import {
  InvalidTopic,
  isValidTopic,
  parseEventType,
  topicName,
  validateTopic
} from "../src/index.ts"
import { checkTopic, compilePattern, snakeCase } from "../src/backend.ts"

test("topicName puts an event type into the CQC namespace", () => {
  assert.equal(topicName("asset_created"), "cqc.events.v1.asset_created")
  assert.equal(topicName("invoice_paid", "billing.events.v2"), "billing.events.v2.invoice_paid")
  // Like CQC's Go TopicName: the event type is lower-cased, nothing else.
  assert.equal(topicName("POSITION_CHANGED"), "cqc.events.v1.position_changed")
  assert.equal(topicName("PriceUpdated"), "cqc.events.v1.priceupdated")
})

test("parseEventType reads the event type of a conventional topic and returns anything else unchanged", () => {
  assert.equal(parseEventType("cqc.events.v1.asset_created"), "asset_created")
  assert.equal(parseEventType("acme.billing.events.v12.invoice_paid"), "invoice_paid")
  assert.equal(parseEventType("orders.created"), "orders.created")
  assert.equal(parseEventType("cqc.events.v1.Asset"), "cqc.events.v1.Asset")
})

test("isValidTopic accepts the CQC convention only", () => {
  for (const ok of ["cqc.events.v1.asset_created", "acme.billing.events.v2.invoice_paid", "a.events.v10.x1"]) {
    assert.equal(isValidTopic(ok), true, ok)
  }
  for (const bad of ["cqc.events.asset_created", "cqc.events.v0.x", "events.v1.x", "CQC.events.v1.x", "cqc.events.v1.x.y",
    "cqc.events.v1.*", "cqc.events.v1.", ""]) {
    assert.equal(isValidTopic(bad), false, bad)
  }
})

test("snakeCase splits words and keeps acronyms together", () => {
  assert.equal(snakeCase("AssetCreated"), "asset_created")
  assert.equal(snakeCase("HTTPRequestSent"), "http_request_sent")
  assert.equal(snakeCase("PositionV2Changed"), "position_v2_changed")
  assert.equal(snakeCase("price"), "price")
})

const problemOf = (topic: string, kind: "subject" | "pattern" = "subject") => {
  const error = checkTopic(topic, kind)
  return error === undefined ? undefined : { problem: error.problem, position: error.position, message: error.message }
}

test("validateTopic names each problem and, for characters, where it is", () => {
  assert.deepEqual(problemOf(""), { problem: "Empty", position: undefined, message: 'invalid topic "": it is empty' })
  assert.equal(problemOf("a".repeat(255)), undefined)
  assert.equal(problemOf("a".repeat(256))?.problem, "TooLong")
  assert.match(problemOf("a".repeat(300))!.message, /300 characters long; the limit is 255/)
  assert.deepEqual(problemOf("cqc.évents"), {
    problem: "NonAscii",
    position: 4,
    message: 'invalid topic "cqc.évents": non-ASCII character "é" at index 4; topics are ASCII only'
  })
  assert.deepEqual(problemOf("cqc.events v1"), {
    problem: "Whitespace",
    position: 10,
    message: 'invalid topic "cqc.events v1": whitespace (a space) at index 10'
  })
  assert.equal(problemOf("cqc.events\tv1")?.problem, "Whitespace")
  assert.equal(problemOf("cqc.events\nv1")?.message.includes("a line feed"), true)
  assert.deepEqual(problemOf("cqc.\u0007x"), {
    problem: "ControlCharacter",
    position: 4,
    message: 'invalid topic "cqc.\\u0007x": control character U+0007 at index 4'
  })
  assert.equal(problemOf("cqc.\u007f")?.problem, "ControlCharacter")
})

test("validateTopic rejects empty tokens: a leading dot, a trailing dot, two dots in a row", () => {
  assert.deepEqual(problemOf(".cqc.events"), {
    problem: "EmptyToken",
    position: 0,
    message: 'invalid topic ".cqc.events": empty token at index 0 (a leading dot)'
  })
  assert.match(problemOf("cqc.events.")!.message, /empty token at index 11 \(a trailing dot\)/)
  assert.match(problemOf("cqc..events")!.message, /empty token at index 4 \(two dots in a row\)/)
})

test("wildcards are refused where a concrete topic is needed and allowed as whole tokens in patterns", () => {
  assert.equal(problemOf("cqc.events.*")?.problem, "Wildcard")
  assert.match(problemOf("cqc.events.>")!.message, /wildcard ">" at index 11; a concrete topic is needed here/)
  assert.equal(problemOf("cqc.events.*", "pattern"), undefined)
  assert.equal(problemOf("cqc.*.v1.>", "pattern"), undefined)
  assert.equal(problemOf(">", "pattern"), undefined)
  assert.deepEqual(problemOf("cqc.>.v1", "pattern"), {
    problem: "MisplacedWildcard",
    position: 4,
    message: 'invalid topic "cqc.>.v1": ">" at index 4 must be the last token'
  })
  assert.equal(problemOf("cqc.ev*nts", "pattern")?.problem, "MisplacedWildcard")
  assert.equal(problemOf("cqc.ev*nts", "pattern")?.position, 6)
})

test("validateTopic is an Effect that succeeds with the topic or fails with InvalidTopic", () => {
  assert.equal(Effect.runSync(validateTopic("cqc.events.v1.asset_created")), "cqc.events.v1.asset_created")
  const error = Effect.runSync(Effect.flip(validateTopic("cqc..x")))
  assert.ok(error instanceof InvalidTopic)
  assert.equal(error._tag, "InvalidTopic")
  assert.equal(error.topic, "cqc..x")
})

test("patterns match like NATS subjects", () => {
  const star = compilePattern("cqc.events.v1.*")
  assert.equal(star("cqc.events.v1.asset_created"), true)
  assert.equal(star("cqc.events.v1.a.b"), false)
  assert.equal(star("cqc.events.v1"), false)
  const tail = compilePattern("cqc.>")
  assert.equal(tail("cqc.events"), true)
  assert.equal(tail("cqc.events.v1.x"), true)
  assert.equal(tail("cqc"), false)
  const middle = compilePattern("cqc.*.v1.x")
  assert.equal(middle("cqc.events.v1.x"), true)
  assert.equal(middle("cqc.events.v2.x"), false)
  const exact = compilePattern("cqc.events.v1.x")
  assert.equal(exact("cqc.events.v1.x"), true)
  assert.equal(exact("cqc.events.v1.y"), false)
})
