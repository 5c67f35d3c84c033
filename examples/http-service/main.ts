// The HTTP example's entry point: `npm run example:http` (Node, @hono/node-server). It serves ./service.ts on PORT
// (default 3000) over the in-memory bus; with NATS_URL set (e.g. NATS_URL=nats://127.0.0.1:4222) over NATS JetStream,
// configured from the environment. SIGINT/SIGTERM stop it gracefully: /health/ready fails while the subscription
// drains, then the bus closes and the listener stops.
import { serve } from "@hono/node-server"
import { NatsEventBus } from "@cqbus/nats"
import { makeHttpService } from "./service.ts"

const natsUrl = process.env.NATS_URL
const overNats = natsUrl !== undefined && natsUrl !== ""
const service = makeHttpService(overNats ? { bus: (config) => NatsEventBus.layerConfig(config) } : {})
await service.start()

const port = Number(process.env.PORT ?? 3000)
const server = serve({ fetch: service.app.fetch, port, hostname: process.env.HOST ?? "127.0.0.1" }, (info) => {
  console.log(`http-service on http://${info.address}:${info.port} over ${overNats ? "NATS JetStream" : "the in-memory bus"}`)
  console.log(`  curl -X POST localhost:${info.port}/assets -d '{"assetId":"a-1","symbol":"ACME"}'`)
  console.log(`  curl localhost:${info.port}/assets/a-1   curl localhost:${info.port}/health   curl localhost:${info.port}/metrics`)
})

let stopping = false
const stop = async () => {
  if (stopping) return
  stopping = true
  await service.dispose()
  server.close()
}
process.on("SIGINT", stop)
process.on("SIGTERM", stop)
