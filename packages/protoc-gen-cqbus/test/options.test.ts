// The cqbus.v1 options as the plugin applies them: which messages become events, with which topic and key (checked on
// the committed golden output, imported and run), and the options it refuses — each failure names the file, the
// message and the field or option, both from the plugin in process (the CodeGeneratorResponse error) and through buf.
import { plugin } from "protoc-gen-cqbus"
import assert from "node:assert/strict"
import { test } from "node:test"
import * as billingEvents from "./golden/acme/billing/v1/billing_events.ts"
import * as billingRpc from "./golden/acme/billing/v1/billing_rpc.ts"
import * as orders from "./golden/acme/events/v1/orders_events.ts"
import { buf, cleanup, protoInput, readTree, requestFor, template, tempDir } from "./support.ts"

test("options: events by convention and by option get their derived, prefixed or overridden topic and their key", () => {
  assert.equal(orders.OrderPlacedEvent.topic, "acme.events.v1.order_placed")
  assert.equal(orders.OrderPlacedTopic, orders.OrderPlacedEvent.topic)
  assert.equal(orders.OrderPlacedEvent.type, "acme.events.v1.OrderPlaced")
  assert.equal(orders.OrderPlacedEvent.key?.({ orderId: "o-17" } as never), "o-17")
  assert.equal(orders.OrderCancelledEvent.topic, "acme.events.v1.order_cancelled")
  assert.equal(orders.OrderCancelledEvent.key, undefined, "no key_field, no ordering key")
  assert.equal(orders.OrderShippedEvent.topic, "acme.legacy.shipments.order_shipped", "topic option wins")
  assert.equal(billingEvents.InvoicePaidEvent.topic, "acme.events.v2.invoice_paid", "file topic_prefix replaces the package")
  assert.equal(billingEvents.InvoicePaidEvent.key?.({ invoiceId: "inv-1" } as never), "inv-1")
  assert.deepEqual(orders.file_acme_events_v1_orders_events, [
    orders.OrderPlacedEvent,
    orders.OrderCancelledEvent,
    orders.OrderShippedEvent
  ])
  const names = Object.keys(orders)
  assert.ok(!names.some((n) => n.startsWith("Money")), `skip: true opts Money out (exports: ${names.join(", ")})`)
  assert.ok(!names.some((n) => n.includes("Line")), "a nested message is not an event by convention")
  assert.ok(!Object.keys(billingEvents).some((n) => n.startsWith("Invoice") && n !== "InvoicePaidEvent" && n !== "InvoicePaidTopic"),
    "a message outside an events package without the option is not an event")
})

test("options: a service gets one subject per unary method; streaming methods are left out", () => {
  assert.deepEqual(billingRpc.BillingServiceRpc.subjects, { getInvoice: "acme.billing.v1.billing_service.get_invoice" })
  assert.deepEqual(billingRpc.BillingServiceSubjects, billingRpc.BillingServiceRpc.subjects)
  assert.equal(billingRpc.BillingServiceRpc.typeName, "acme.billing.v1.BillingService")
})

const header = `syntax = "proto3";\npackage acme.events.v1;\nimport "cqbus/v1/options.proto";\n`

/** Runs the plugin in process on one file and returns the response's error ("" when it generated). */
const errorOf = (body: string, name = "acme/events/v1/bad.proto"): string => {
  const input = protoInput({ [name]: body.startsWith("syntax") ? body : header + body })
  try {
    const response = plugin.run(requestFor(input, [name]))
    return response.error ?? ""
  } finally {
    cleanup(input)
  }
}

const includesAll = (text: string, parts: ReadonlyArray<string>) => {
  for (const part of parts) assert.ok(text.includes(part), `${JSON.stringify(text)} should mention ${JSON.stringify(part)}`)
}

test("options: a valid file generates without an error (the cases below fail only because of their option)", { timeout: 60_000 }, () => {
  const input = protoInput({ "acme/events/v1/ok.proto": `${header}message Ok {\n  option (cqbus.v1.event) = {key_field: "id"};\n  string id = 1;\n}\n` })
  try {
    const response = plugin.run(requestFor(input, ["acme/events/v1/ok.proto"]))
    assert.equal(response.error ?? "", "")
    assert.deepEqual(response.file.map((f) => f.name), ["acme/events/v1/ok_events.ts"])
    includesAll(response.file[0]!.content ?? "", ['key: "id"', '"acme.events.v1.ok"'])
  } finally {
    cleanup(input)
  }
})

test("options: an unknown key field fails generation naming the file, the message and the field", { timeout: 60_000 }, () => {
  const error = errorOf(`message Bad {\n  option (cqbus.v1.event) = {key_field: "asset_idd"};\n  string asset_id = 1;\n  string name = 2;\n}\n`)
  includesAll(error, ["acme/events/v1/bad.proto", "acme.events.v1.Bad", "key_field", '"asset_idd"', "asset_id, name"])
})

test("options: a key field that is not a string fails generation naming the file, the message and the field", { timeout: 60_000 }, () => {
  const error = errorOf(`message Bad {\n  option (cqbus.v1.event) = {key_field: "version"};\n  uint64 version = 1;\n}\n`)
  includesAll(error, ["acme/events/v1/bad.proto", "acme.events.v1.Bad", "version", "a uint64 field, not a string"])
  const repeated = errorOf(`message Bad {\n  option (cqbus.v1.event) = {key_field: "tags"};\n  repeated string tags = 1;\n}\n`)
  includesAll(repeated, ["acme.events.v1.Bad", "tags", "a repeated field, not a string"])
  const nested = errorOf(`message Bad {\n  option (cqbus.v1.event) = {key_field: "inner"};\n  Inner inner = 1;\n  message Inner {}\n}\n`)
  includesAll(nested, ["acme.events.v1.Bad", "inner", "a message field (acme.events.v1.Bad.Inner), not a string"])
})

test("options: an optional or oneof key field fails generation (a key must always be set)", { timeout: 60_000 }, () => {
  const optional = errorOf(`message Bad {\n  option (cqbus.v1.event) = {key_field: "id"};\n  optional string id = 1;\n}\n`)
  includesAll(optional, ["acme/events/v1/bad.proto", "acme.events.v1.Bad", "field id is optional"])
  const oneof = errorOf(`message Bad {\n  option (cqbus.v1.event) = {key_field: "id"};\n  oneof which {\n    string id = 1;\n    string other = 2;\n  }\n}\n`)
  includesAll(oneof, ["acme.events.v1.Bad", "field id is in oneof which"])
})

test("options: an invalid topic or topic prefix fails generation with the topic rule that is broken", { timeout: 60_000 }, () => {
  const wildcard = errorOf(`message Bad {\n  option (cqbus.v1.event) = {topic: "acme.events.*"};\n  string id = 1;\n}\n`)
  includesAll(wildcard, ["acme/events/v1/bad.proto", "acme.events.v1.Bad", "option (cqbus.v1.event).topic", 'wildcard "*" at index 12'])
  const prefix = errorOf(`${header}option (cqbus.v1.file) = {topic_prefix: "acme..events"};\nmessage Fine {\n  string id = 1;\n}\n`)
  includesAll(prefix, ["acme/events/v1/bad.proto", "option (cqbus.v1.file).topic_prefix", "two dots in a row"])
})

test("options: two events on one topic fail generation naming both messages", { timeout: 60_000 }, () => {
  const error = errorOf(
    `message First {\n  string id = 1;\n}\nmessage Second {\n  option (cqbus.v1.event) = {topic: "acme.events.v1.first"};\n  string id = 1;\n}\n`
  )
  includesAll(error, ["acme.events.v1.Second", "acme.events.v1.first", "acme.events.v1.First"])
})

test("options: through buf, an invalid option makes `buf generate` fail with the named message and write nothing", { timeout: 120_000 }, () => {
  const name = "acme/events/v1/bad.proto"
  const input = protoInput({ [name]: `${header}message Bad {\n  option (cqbus.v1.event) = {key_field: "nope"};\n  string id = 1;\n}\n` })
  const out = tempDir("out")
  try {
    const run = buf("generate", input, "--template", template(out))
    assert.notEqual(run.status, 0, "buf generate fails")
    includesAll(run.stderr, [name, "acme.events.v1.Bad", '"nope"'])
    assert.ok(![...readTree(out).keys()].some((f) => f.endsWith("_events.ts")), "no events file is written")
  } finally {
    cleanup(input)
    cleanup(out)
  }
})
