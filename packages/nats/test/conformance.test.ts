// The NATS JetStream transport against the conformance suite: every case gets its own nats-server (free port,
// temporary store), so cases cannot see each other's streams or consumers; the reconnect cases restart that server on
// its port and store. Time is real; delays are short.
import { NatsEventBus } from "@cqbus/nats"
import { conformance } from "@cqbus/testkit"
import { NatsServer } from "@cqbus/testkit/nats-server"
import { Effect, Layer } from "effect"

// The server stays down longer than a publish waits for its PubAck, so a publish sent meanwhile fails (retriable)
// and the reconnect cases see their retries at work.
const PUBLISH_TIMEOUT = "1 second"
const DOWN_FOR = "1500 millis"

conformance({
  name: "nats",
  layer: () =>
    Layer.unwrap(NatsServer.NatsServer.useSync((server) =>
      NatsEventBus.layer({ servers: server.url, source: "conformance", publishTimeout: PUBLISH_TIMEOUT })
    )).pipe(Layer.provideMerge(NatsServer.layer())),
  restart: NatsServer.NatsServer.use((server) =>
    Effect.promise(() => server.stop()).pipe(
      Effect.andThen(Effect.sleep(DOWN_FOR)),
      Effect.andThen(Effect.promise(() => server.restart()))
    )
  ),
  features: {
    retention: true,
    deadLetters: true,
    dedupe: true,
    wildcards: true,
    virtualTime: "a broker's redelivery timers run on the server's wall clock"
  },
  timeout: 60_000
})
