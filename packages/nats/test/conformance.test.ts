// The NATS JetStream transport against the conformance suite: every case gets its own nats-server (free port,
// temporary store), so cases cannot see each other's streams or consumers. Time is real; delays are short.
import { NatsEventBus } from "@cqbus/nats"
import { conformance } from "@cqbus/testkit"
import { NatsServer } from "@cqbus/testkit/nats-server"
import { Effect, Layer } from "effect"

conformance({
  name: "nats",
  layer: () =>
    Layer.unwrap(Effect.map(NatsServer.make(), (server) => NatsEventBus.layer({ servers: server.url, source: "conformance" }))),
  features: {
    retention: true,
    deadLetters: true,
    dedupe: true,
    wildcards: true,
    virtualTime: "a broker's redelivery timers run on the server's wall clock"
  },
  timeout: 60_000
})
