// A small consuming service for the SIGTERM test in packages/nats/test/faults.test.ts, run as a child process with the test's
// own runtime: it subscribes a slow handler as a group member and runs under `runMain`, so SIGTERM starts the graceful
// shutdown. It reports on stdout, one line each: `ready`, `start <event id>` when a handler begins, `done <event id>`
// when it has finished (its ack follows), `exiting` when the main effect's scopes have closed, `exit <code>` as the
// process exits (Deno's child_process reports a child sent SIGTERM as killed by it even when it exited by itself, so
// the test reads the code here). Not a test file.
import { EventBus, runMain } from "@cqbus/core"
import { NatsEventBus } from "@cqbus/nats"
import { AssetCreatedEvent } from "@cqbus/testkit/events"
import { Effect } from "effect"
import process from "node:process"

const env = (name: string): string => {
  const value = process.env[name]
  if (value === undefined || value === "") throw new Error(`sigterm-service: ${name} is not set`)
  return value
}

const say = (line: string) => Effect.sync(() => void process.stdout.write(`${line}\n`))

const service = Effect.gen(function*() {
  const bus = yield* EventBus.EventBus
  yield* bus.subscribe(AssetCreatedEvent, (_event, delivery) =>
    Effect.gen(function*() {
      yield* say(`start ${delivery.eventId}`)
      yield* Effect.sleep(`${Number(env("HANDLER_MS"))} millis`)
      yield* say(`done ${delivery.eventId}`)
    }), {
    group: env("GROUP"),
    concurrency: Number(env("CONCURRENCY")),
    drainTimeout: `${Number(env("DRAIN_MS"))} millis`
  })
  yield* say("ready")
  return yield* Effect.never
}).pipe(
  Effect.scoped,
  Effect.ensuring(say("exiting")),
  Effect.provide(NatsEventBus.layer({ servers: env("NATS_URL"), source: "sigterm-service" }))
)

process.on("exit", (code) => void process.stdout.write(`exit ${code}\n`))
runMain(service)
