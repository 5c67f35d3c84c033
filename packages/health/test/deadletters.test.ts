// The dead-letter routes on a real HTTP listener (@hono/node-server, port 0) over a memory bus: listing with filters
// and paging, one record with its decoded body, typed errors as JSON with 4xx/5xx, mutating routes absent unless
// enabled, replay and purge when they are, no credentials in the output.
import assert from "node:assert/strict"
import type { AddressInfo } from "node:net"
import { test } from "node:test"
import { serve } from "@hono/node-server"
import { DeadLetters, EventBus, Reject, Transport } from "@cqbus/core"
import { deadLetterRouter, type DeadLetterRouterOptions } from "@cqbus/health"
import { AssetCreatedEvent, PriceUpdatedEvent } from "@cqbus/testkit/events"
import { Context, Effect, Exit, Layer, ManagedRuntime, Scope } from "effect"
import { Hono } from "hono"

type Services = EventBus.EventBus | Transport.Transport | DeadLetters.DeadLetters

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

const eventually = async (condition: () => Promise<boolean> | boolean, what: string, within = 5_000) => {
  const deadline = Date.now() + within
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`)
    await sleep(10)
  }
}

/** Serves `app` on a free loopback port for the body, then closes the listener. */
const served = async <A>(app: Hono, body: (base: string) => Promise<A>): Promise<A> => {
  let server: ReturnType<typeof serve> | undefined
  const { address, port } = await new Promise<AddressInfo>((resolve) => {
    server = serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" }, resolve)
  })
  try {
    return await body(`http://${address}:${port}`)
  } finally {
    await new Promise<void>((resolve) => server!.close(() => resolve()))
  }
}

/** JSON of a response, with its status and the headers every answer has. */
const call = async (url: string, init?: RequestInit): Promise<{ status: number; body: any; text: string }> => {
  const response = await fetch(url, init)
  const text = await response.text()
  if (response.status !== 404 || text.startsWith("{")) {
    assert.equal(response.headers.get("content-type"), "application/json", `${url}: ${text}`)
    assert.equal(response.headers.get("cache-control"), "no-store")
  }
  return { status: response.status, body: text.startsWith("{") ? JSON.parse(text) : text, text }
}

/**
 * A memory bus with the `DeadLetters` service, and dead letters: 3 assets rejected by group "assets" (the first with
 * an `authorization` header), 2 prices rejected by group "prices". `fixed()` makes the asset handler succeed;
 * `handled` lists the asset ids it handled since.
 */
const withDeadLetters = async (body: (context: {
  readonly runtime: ManagedRuntime.ManagedRuntime<Services, unknown>
  readonly fix: () => void
  readonly handled: Array<string>
}) => Promise<void>) => {
  const runtime = ManagedRuntime.make(
    DeadLetters.layer({ events: [AssetCreatedEvent] }).pipe(Layer.provideMerge(EventBus.layerMemory()))
  )
  const scope = Scope.makeUnsafe()
  let broken = true
  const handled: Array<string> = []
  try {
    await runtime.runPromise(Effect.gen(function*() {
      const bus = yield* EventBus.EventBus
      yield* bus.subscribe(AssetCreatedEvent, (e) =>
        broken ? Effect.fail(new Reject({ reason: `asset ${e.assetId} is blocked` })) : Effect.sync(() => handled.push(e.assetId)), { group: "assets" })
      yield* bus.subscribe(PriceUpdatedEvent, () => Effect.fail(new Reject({ reason: "stale price" })), { group: "prices" })
      yield* bus.publish(AssetCreatedEvent, { assetId: "a-0" }, {
        eventId: "evt-a-0",
        headers: { authorization: "Bearer s3cr3t-t0ken", "x-api-key": "k3y-value" }
      })
      for (let i = 1; i < 3; i++) yield* bus.publish(AssetCreatedEvent, { assetId: `a-${i}` })
      for (let i = 0; i < 2; i++) yield* bus.publish(PriceUpdatedEvent, { assetId: `p-${i}`, price: "1" })
    }).pipe(Scope.provide(scope)))
    const transport = await runtime.runPromise(Effect.service(Transport.Transport))
    await eventually(async () => (await Effect.runPromise(transport.deadLetters!)).length === 5, "5 dead letters are stored")
    await body({ runtime, fix: () => (broken = false), handled })
  } finally {
    await Effect.runPromise(Scope.close(scope, Exit.void))
    await runtime.dispose()
  }
}

const mount = <R>(options: DeadLetterRouterOptions<R>) => new Hono().route("/admin", deadLetterRouter(options))

test("dead-letter routes: list with filters and paging, one record decoded, typed errors, no credentials", async () => {
  await withDeadLetters(({ runtime }) =>
    served(mount({ runtime }), async (base) => {
      const all = await call(`${base}/admin/dead-letters`)
      assert.equal(all.status, 200, all.text)
      assert.equal(all.body.items.length, 5)
      assert.equal(all.body.next, null)
      const assets = await call(`${base}/admin/dead-letters?topic=${AssetCreatedEvent.topic}&errorTag=Reject`)
      assert.deepEqual(assets.body.items.map((i: any) => i.topic), Array(3).fill(AssetCreatedEvent.topic))
      assert.equal((await call(`${base}/admin/dead-letters?group=prices`)).body.items.length, 2)
      assert.equal((await call(`${base}/admin/dead-letters?reasonContains=A-1`)).body.items.length, 1)
      assert.equal((await call(`${base}/admin/dead-letters?to=2000-01-01T00:00:00Z`)).body.items.length, 0)

      const first = await call(`${base}/admin/dead-letters?limit=2`)
      assert.equal(first.body.items.length, 2)
      assert.equal(typeof first.body.next, "string")
      const second = await call(`${base}/admin/dead-letters?limit=2&cursor=${first.body.next}`)
      const third = await call(`${base}/admin/dead-letters?limit=2&cursor=${second.body.next}`)
      const ids = [...first.body.items, ...second.body.items, ...third.body.items].map((i: any) => i.id)
      assert.deepEqual(ids, all.body.items.map((i: any) => i.id), "pages of 2 cover the list in order")
      assert.equal(third.body.next, null)

      const id = all.body.items[0].id
      const one = await call(`${base}/admin/dead-letters/${id}`)
      assert.equal(one.status, 200, one.text)
      assert.equal(one.body.eventId, "evt-a-0")
      assert.equal(one.body.errorTag, "Reject")
      assert.equal(one.body.group, "assets")
      assert.deepEqual(one.body.decoded, { type: "cqc.events.v1.AssetCreated", json: { assetId: "a-0" } })
      assert.equal(typeof one.body.body, "string", "the original bytes, in base64")
      assert.equal(one.body.headers.authorization, "***")
      assert.equal(one.body.headers["x-api-key"], "***")
      assert.ok(!one.text.includes("s3cr3t") && !all.text.includes("s3cr3t") && !all.text.includes("k3y-value"), "no credential in any output")
      const price = await call(`${base}/admin/dead-letters/${all.body.items[3].id}`)
      assert.equal(price.body.decoded, null, "a type the router does not know is not decoded")

      const missing = await call(`${base}/admin/dead-letters/9999`)
      assert.equal(missing.status, 404)
      assert.deepEqual(missing.body.error, { _tag: "DeadLetterError", reason: "NotFound", message: "no dead letter has the id \"9999\"" })
      const badTime = await call(`${base}/admin/dead-letters?from=yesterday`)
      assert.equal(badTime.status, 400)
      assert.equal(badTime.body.error.reason, "InvalidQuery")
      assert.equal((await call(`${base}/admin/dead-letters?limit=0`)).status, 400)
      assert.equal((await call(`${base}/admin/dead-letters?topic=bad%20topic`)).status, 400)

      // Read-only by default: the mutating routes do not exist.
      const replay = await fetch(`${base}/admin/dead-letters/replay`, { method: "POST", body: JSON.stringify({ ids: [id] }) })
      assert.equal(replay.status, 404)
      const purge = await fetch(`${base}/admin/dead-letters?all=true`, { method: "DELETE" })
      assert.equal(purge.status, 404)
      assert.equal((await call(`${base}/admin/dead-letters`)).body.items.length, 5, "nothing was changed")
    }))
})

test("dead-letter routes with mutations: replay to the fixed group, purge by filter with a count", async () => {
  await withDeadLetters(({ fix, handled, runtime }) =>
    served(mount({ runtime, mutations: true }), async (base) => {
      const post = (body: unknown) =>
        call(`${base}/admin/dead-letters/replay`, { method: "POST", body: JSON.stringify(body), headers: { "content-type": "application/json" } })
      assert.equal((await post({})).status, 400, "ids or filter is required")
      assert.equal((await post({ ids: ["1"], filter: {} })).status, 400, "not both")
      assert.equal((await post({ filter: { from: "not a time" } })).status, 400)
      const notJson = await call(`${base}/admin/dead-letters/replay`, { method: "POST", body: "{" })
      assert.equal(notJson.status, 400)

      fix()
      const replayed = await post({ filter: { topic: AssetCreatedEvent.topic }, remove: true })
      assert.equal(replayed.status, 200, replayed.text)
      assert.deepEqual(replayed.body, { replayed: 3, duplicates: 0, removed: 3, failures: [], more: false })
      await eventually(() => handled.length === 3, "the fixed handler handles the 3 replayed assets")
      assert.deepEqual([...handled].sort(), ["a-0", "a-1", "a-2"])

      const unsafe = await call(`${base}/admin/dead-letters`, { method: "DELETE" })
      assert.equal(unsafe.status, 400, "no purge of everything without all=true")
      const purged = await call(`${base}/admin/dead-letters?topic=${PriceUpdatedEvent.topic}&reasonContains=stale`, { method: "DELETE" })
      assert.deepEqual(purged.body, { purged: 2 })
      assert.equal((await call(`${base}/admin/dead-letters`)).body.items.length, 0)
      await sleep(50)
      assert.equal(handled.length, 3, "each replayed event was handled once")
    }))
})

test("dead-letter routes: a transport without a dead-letter store answers 501", async () => {
  const memory = await Effect.runPromise(Effect.service(Transport.Transport).pipe(Effect.provide(EventBus.layerMemory())))
  const { deadLetterStore: _, ...bare } = memory
  const runtime = Context.make(Transport.Transport, bare)
  await served(mount({ runtime }), async (base) => {
    const answer = await call(`${base}/admin/dead-letters`)
    assert.equal(answer.status, 501)
    assert.equal(answer.body.error.reason, "Unsupported")
    assert.match(answer.body.error.message, /no dead-letter store/)
  })
  assert.throws(() => deadLetterRouter({ runtime, mutations: "yes" as never }), /deadLetterRouter\.mutations/)
})
