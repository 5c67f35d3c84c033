// The quickstart's entry point: `npm run demo`. The program itself is in ./quickstart.ts. It runs on the in-memory
// bus; with NATS_URL set (e.g. NATS_URL=nats://127.0.0.1:4222 npm run demo) it runs the same program over NATS
// JetStream, configured from the environment.
import { NatsEventBus } from "@cqbus/nats"
import { runQuickstart } from "./quickstart.ts"

const overNats = process.env.NATS_URL !== undefined && process.env.NATS_URL !== ""
if (overNats) console.log(`(over NATS JetStream at ${process.env.NATS_URL})\n`)
// The program prints its own line for every retry and rejection, so the bus's default failure warnings are off.
await runQuickstart(
  (line) => console.log(line),
  overNats ? NatsEventBus.layerConfig({ source: "quickstart", logFailures: false }) : undefined
)
