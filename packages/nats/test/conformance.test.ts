// The NATS JetStream transport against the conformance suite: every case gets its own nats-server (free port,
// temporary store), so cases cannot see each other's streams or consumers; the reconnect cases restart that server on
// its port and store. Time is real; delays are short.
import { NatsEventBus } from "@cqbus/nats"
import { conformance } from "@cqbus/testkit"
import { NatsServer } from "@cqbus/testkit/nats-server"
import { Effect, Layer } from "effect"

conformance({
  name: "nats",
  layer: () =>
    Layer.unwrap(NatsServer.NatsServer.useSync((server) => NatsEventBus.layer({ servers: server.url, source: "conformance" })))
      .pipe(Layer.provideMerge(NatsServer.layer())),
  restart: NatsServer.NatsServer.use((server) => Effect.promise(() => server.restart())),
  features: {
    retention: true,
    deadLetters: true,
    dedupe: true,
    wildcards: true,
    virtualTime: "a broker's redelivery timers run on the server's wall clock"
  },
  timeout: 60_000
})
