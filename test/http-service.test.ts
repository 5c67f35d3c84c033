// The HTTP example (examples/http-service) does what it says: events posted over HTTP are handled behind the full
// plugin stack (a transient failure retried in process, a defect recovered and dead-lettered), and /health and
// /metrics tell the truth about it. Through `app.request` on every runtime, and once through a real listener.
import assert from "node:assert/strict"
import type { AddressInfo } from "node:net"
import { test } from "node:test"
import { serve } from "@hono/node-server"
import type { HealthResponse } from "@cqbus/health"
import { makeHttpService } from "../examples/http-service/service.ts"

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** Polls until `condition` holds (real time: the example runs on the wall clock). */
const eventually = async (condition: () => Promise<boolean> | boolean, what: string, within = 5_000) => {
  const deadline = Date.now() + within
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`)
    await sleep(10)
  }
}

/** The value of one sample line (`name{labels} value`) whose labels include all of `labels`. */
const sampleValue = (text: string, name: string, labels: Record<string, string>): number | undefined => {
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue
    if (Object.entries(labels).every(([key, value]) => line.includes(`${key}="${value}"`))) {
      return Number(line.slice(line.lastIndexOf(" ") + 1))
    }
  }
  return undefined
}

test("http-service: POST /assets is indexed behind the plugin stack; /health passes and /metrics counts it (app.request)", async () => {
  const service = makeHttpService({ logLevel: "None" })
  try {
    const { app } = service
    assert.equal((await app.request("/health/live")).status, 200)
    const post = (assetId: string, symbol: string) =>
      app.request("/assets", { method: "POST", body: JSON.stringify({ assetId, symbol }), headers: { "content-type": "application/json" } })
    const accepted = await post("a-1", "ACME")
    assert.equal(accepted.status, 202)
    assert.equal(((await accepted.json()) as { topic: string }).topic, "cqc.events.v1.asset_created")
    assert.equal((await post("a-2", "BUSY-1")).status, 202)
    assert.equal((await post("a-3", "CRASH")).status, 202)
    assert.equal((await app.request("/assets", { method: "POST", body: "{}" })).status, 400)

    await eventually(() => service.indexed.size === 2, "a-1 and a-2 are indexed")
    const indexed = await app.request("/assets/a-2")
    assert.deepEqual(await indexed.json(), { assetId: "a-2", symbol: "BUSY-1" }, "the transient failure was retried")
    assert.equal((await app.request("/assets/a-3")).status, 404, "the crashing event is not indexed")

    // a-3: a defect on each of its 3 deliveries (recovered, retried in process, then dead-lettered by maxDeliver 3).
    const scrape = async () => (await app.request("/metrics")).text()
    const consumed = (text: string, outcome: string) =>
      sampleValue(text, "messaging_client_consumed_messages_total", { messaging_consumer_group_name: "indexer", outcome })
    await eventually(async () => (consumed(await scrape(), "dead_letter") ?? 0) >= 1, "a-3's last delivery is counted")
    const text = await scrape()
    assert.equal(consumed(text, "ack"), 2)
    assert.equal(consumed(text, "retry"), 2, "a-3's first two deliveries are redelivered")
    assert.equal(consumed(text, "dead_letter"), 1, "its third, the last maxDeliver allows, is dead-lettered")
    const defects = (outcome: string) =>
      sampleValue(text, "messaging_client_consumed_messages_total", { error_type: "HandlerDefect", outcome })
    assert.deepEqual([defects("retry"), defects("dead_letter")], [2, 1], "recovery turned the defect into a typed HandlerDefect")
    assert.equal(sampleValue(text, "messaging_client_sent_messages_total", { outcome: "ok" }), 3)
    assert.equal(sampleValue(text, "messaging_consumer_pending_messages", { messaging_consumer_group_name: "indexer" }), 0)
    assert.match(text, /^# TYPE messaging_consumer_ack_pending_messages gauge$/m)

    const health = await app.request("/health")
    assert.equal(health.status, 200)
    assert.equal(health.headers.get("content-type"), "application/health+json")
    const report = (await health.json()) as HealthResponse
    assert.equal(report.status, "pass")
    assert.equal(report.serviceId, "http-service")
    assert.equal(report.checks["heartbeat:responseTime"]![0]!.status, "pass")
    assert.deepEqual(report.checks["consumers:backlog"]!.map((c) => c.componentId).sort(), ["indexer"],
      "the indexer group only: the heartbeat's subscription is internal")
  } finally {
    await service.dispose()
  }
})

test("http-service: served by @hono/node-server on a real port and queried with fetch", async () => {
  const service = makeHttpService({ logLevel: "None" })
  await service.start()
  let server: ReturnType<typeof serve> | undefined
  const { address, port } = await new Promise<AddressInfo>((resolve) => {
    server = serve({ fetch: service.app.fetch, port: 0, hostname: "127.0.0.1" }, resolve)
  })
  try {
    const base = `http://${address}:${port}`
    const ready = await fetch(`${base}/health/ready`)
    assert.equal(ready.status, 200)
    assert.equal(ready.headers.get("content-type"), "application/health+json")
    assert.equal(ready.headers.get("cache-control"), "no-store")
    assert.equal(((await ready.json()) as HealthResponse).status, "pass")
    const posted = await fetch(`${base}/assets`, { method: "POST", body: JSON.stringify({ assetId: "n-1", symbol: "NODE" }) })
    assert.equal(posted.status, 202)
    await eventually(async () => (await fetch(`${base}/assets/n-1`)).status === 200, "n-1 is indexed")
    const metrics = await fetch(`${base}/metrics`)
    assert.match(metrics.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/)
    assert.equal(sampleValue(await metrics.text(), "messaging_client_consumed_messages_total", { outcome: "ack" }), 1)
  } finally {
    await new Promise<void>((resolve) => server!.close(() => resolve()))
    await service.dispose()
  }
})
