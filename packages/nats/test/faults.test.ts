// Faults on one nats-server under load (issue 11, item 3): a server that hangs (SIGSTOP, then SIGCONT), a stream at its
// limits that discards new messages, SIGTERM to a consuming service with events in flight, and a slow consumer facing
// a large backlog. Each test owns its server and counts every event: sent, acked, handled, duplicates, given up (by a
// caller that honours `retriable`) and lost. packages/nats/test/reliability.test.ts covers the killed server, the subscriber
// closed mid-stream and `check` against a hung server; these do not repeat them.
import { PublishError } from "@cqbus/core"
import { AssetCreatedEvent } from "@cqbus/testkit/events"
import { jetstreamManager } from "@nats-io/jetstream"
import { Effect, Result, type Scope } from "effect"
import assert from "node:assert/strict"
import { spawn } from "node:child_process"
import path from "node:path"
import process from "node:process"
import { test } from "node:test"
import { fileURLToPath } from "node:url"
import { firstAfter, longestGap, publishCarefully, Tally } from "./support/load.ts"
import { bus, run, server, waitFor } from "./support/nats.ts"

const HERE = path.dirname(fileURLToPath(import.meta.url))

test("nats faults: a hung server (SIGSTOP, SIGCONT) under load: publishes time out retriable and resume, consumers recover, nothing lost", { timeout: 90_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const publishTimeout = 1_000
    const { bus: b } = yield* bus({ servers: nats.url, source: "faults", publishTimeout: `${publishTimeout} millis` })
    const tally = new Tally()
    yield* b.subscribe(AssetCreatedEvent, (_event, delivery) => Effect.sync(() => tally.handle(delivery.eventId)), {
      group: "hung",
      concurrency: 32
    })

    // Continuous load: WORKERS callers, each publishing its next event as soon as the last one is acked, a few ms
    // apart, until `stop`. A caller retries only what is retriable and gives up on the rest (or after 30 s).
    const WORKERS = 16
    let stop = false
    let next = 0
    const giveUpAt = Date.now() + 30_000
    const worker = Effect.gen(function*() {
      while (!stop) {
        yield* publishCarefully(b, tally, `hung-${next++}`, { giveUpAt, retryAfter: 100 })
        yield* Effect.sleep("5 millis")
      }
    })
    let stoppedAt = 0
    let continuedAt = 0
    const fault = Effect.gen(function*() {
      yield* waitFor(() => tally.handled.size >= 500, "the load runs and is consumed")
      stoppedAt = Date.now()
      yield* Effect.promise(() => nats.pause())
      yield* Effect.sleep("3 seconds").pipe(Effect.ensuring(Effect.promise(async () => {
        await nats.resume()
        continuedAt = Date.now()
      })))
      // Load goes on after the server is back, until the acks flow again for a while.
      yield* waitFor(() => tally.ackTimes.some((t) => t > continuedAt + 2_000), "publishes are acked 2 s after SIGCONT", 30_000)
      stop = true
    })
    yield* Effect.all([Effect.all(Array.from({ length: WORKERS }, () => worker), { concurrency: "unbounded" }), fault], {
      concurrency: "unbounded"
    })
    const loadEnded = Date.now()

    yield* waitFor(() => tally.lost().length === 0, "every acked event is handled", 30_000,
      () => `${tally.lost().length} acked events not handled, e.g. ${tally.lost().slice(0, 5).join(", ")}`)
    yield* Effect.sleep("300 millis")

    const figures = {
      ...tally.counts(),
      stoppedMs: continuedAt - stoppedAt,
      publishGapMs: longestGap(tally.ackTimes, stoppedAt - 1_000, loadEnded),
      consumeGapMs: longestGap(tally.handleTimes, stoppedAt - 1_000, loadEnded),
      firstAckAfterContMs: firstAfter(tally.ackTimes, continuedAt),
      firstHandledAfterContMs: firstAfter(tally.handleTimes, continuedAt)
    }
    console.log(`hung server: ${JSON.stringify(figures)}`)
    assert.deepEqual([...tally.givenUp], [], "a caller that honours `retriable` gave up on nothing")
    assert.ok(tally.failures.size > 0, "publishes failed while the server hung (otherwise the test tested nothing)")
    for (const reason of tally.failures.keys()) assert.match(reason, /^(Timeout|NotConnected)$/, `failure ${reason} is typed and retriable`)
    // Failures only because of the hang: from the SIGSTOP until the requests sent before the SIGCONT timed out.
    const outside = tally.failureTimes.filter((t) => t < stoppedAt || t > continuedAt + publishTimeout + 1_000)
    assert.deepEqual(outside.map((t) => t - stoppedAt), [], "no publish failed outside the hang (ms after SIGSTOP)")
    assert.ok(tally.handleTimes.some((t) => t > continuedAt), "the same subscription handled events after SIGCONT")
    assert.equal(tally.acked.size, tally.sent.size, "every event sent was acked in the end")
    assert.deepEqual(tally.lost(), [], "nothing acked was lost")
  })))

for (const limit of [{ maxMessages: 300 }, { maxBytes: 64 * 1024 }] as const) {
  const which = "maxMessages" in limit ? `maxMessages ${limit.maxMessages}` : `maxBytes ${limit.maxBytes}`
  test(`nats faults: a stream full at ${which} with discard "new": every publish is acked and stored or fails StreamFull, nothing silently dropped`, { timeout: 60_000 }, () =>
    run(Effect.gen(function*() {
      const nats = yield* server()
      const name = `FULL_${crypto.randomUUID().replaceAll("-", "").slice(0, 10).toUpperCase()}`
      const { bus: b, nats: transport } = yield* bus({
        servers: nats.url,
        source: "faults",
        stream: { name, discard: "new", ...limit }
      })
      const TOTAL = 500
      const ids = Array.from({ length: TOTAL }, (_, i) => `full-${i}`)
      // Pipelined, as a busy service publishes: 64 in flight at once.
      const results = yield* b.publishAll(AssetCreatedEvent, ids.map((id) => ({ assetId: id, symbol: "FULL" })), {
        window: 64,
        publish: (message) => ({ eventId: message.assetId! })
      })
      const acked = new Set<string>()
      const failed = new Map<string, PublishError>()
      const other: Array<string> = []
      results.forEach((result, i) => {
        if (Result.isSuccess(result)) acked.add(ids[i]!)
        else if (result.failure instanceof PublishError && result.failure.reason === "StreamFull") failed.set(ids[i]!, result.failure)
        else other.push(`${ids[i]}: ${String(result.failure)}`)
      })
      assert.deepEqual(other, [], "every failure is a StreamFull PublishError")
      assert.ok(acked.size > 0 && failed.size > 0, `the stream filled up (${acked.size} acked, ${failed.size} refused)`)
      for (const error of failed.values()) {
        // Retriable: the refusal stores nothing, and room comes back (maxAge, consumers of a workqueue or interest
        // stream, an operator raising the limit or purging), so the same event id can be sent again later.
        assert.equal(error.retriable, true)
        assert.match(String(error), /^PublishError: cannot publish to cqc\.events\.v1\.asset_created: the stream is full/)
      }

      // What the stream holds is exactly what was acked: read it all back with a group from the start.
      const jsm = yield* Effect.promise(() => jetstreamManager(transport.connection))
      const info = yield* Effect.promise(() => jsm.streams.info(name))
      const stored = new Set<string>()
      yield* b.subscribe(AssetCreatedEvent, (_event, delivery) => Effect.sync(() => void stored.add(delivery.eventId)), {
        group: "reader"
      })
      yield* waitFor(() => stored.size >= info.state.messages, "the stored events are read back", 15_000,
        () => `${stored.size} of ${info.state.messages}`)
      yield* Effect.sleep("200 millis")
      assert.equal(info.state.messages, acked.size, "the stream holds as many messages as were acked")
      assert.deepEqual([...stored].sort(), [...acked].sort(), "the stored events are exactly the acked ones")

      // Room comes back (an operator raises the limit): a caller retrying the refused events gets them all stored.
      yield* Effect.promise(() => jsm.streams.update(name, { max_msgs: -1, max_bytes: -1 }))
      const retried = yield* Effect.forEach([...failed.keys()], (id) =>
        Effect.result(b.publish(AssetCreatedEvent, { assetId: id, symbol: "FULL" }, { eventId: id })))
      const retriedOk = retried.filter(Result.isSuccess).length
      yield* waitFor(() => stored.size >= TOTAL, "the retried events are read too", 15_000, () => `${stored.size} of ${TOTAL}`)
      const figures = {
        limit: which,
        sent: TOTAL,
        acked: acked.size,
        refusedStreamFull: failed.size,
        storedWhenFull: info.state.messages,
        bytesWhenFull: info.state.bytes,
        retriedAfterRaiseAcked: retriedOk,
        handled: stored.size,
        lost: [...acked].filter((id) => !stored.has(id)).length
      }
      console.log(`stream full: ${JSON.stringify(figures)}`)
      assert.equal(acked.size + failed.size, TOTAL, "every publish was acked or failed typed")
      assert.equal(retriedOk, failed.size, "every refused event was stored once there was room")
      assert.equal(stored.size, TOTAL, "every event was handled in the end")
    })))
}

/** How to run a TypeScript file as a service with the runtime running this test (and its module resolution flags). */
const serviceCommand = (script: string): { readonly command: string; readonly args: ReadonlyArray<string> } => {
  if ("Deno" in globalThis) {
    return { command: process.execPath, args: ["run", "-A", "--no-check", "--no-lock", "--conditions=@cqbus/source", script] }
  }
  // Node: the loader and conditions of this process (tsx, @cqbus/source), without node --test's own flags. Bun: its
  // --conditions.
  return { command: process.execPath, args: [...process.execArgv.filter((a) => !a.startsWith("--test")), script] }
}

/** A running `packages/nats/test/support/sigterm-service.ts` and what it reported so far. */
interface ServiceProcess {
  readonly child: ReturnType<typeof spawn>
  /** Event ids whose handler started / finished. */
  readonly started: Set<string>
  readonly done: Set<string>
  readonly lines: ReadonlyArray<string>
  readonly stderr: ReadonlyArray<string>
  /** The `exit <code>` line the service printed as it exited. */
  readonly exitLine: string | undefined
  /** How the OS reported its end, once it ended. */
  readonly exit: { readonly code: number | null; readonly signal: string | null } | undefined
  readonly exited: Effect.Effect<void>
  readonly describe: () => string
}

/** Starts the service with `env` on top of this process's environment; killed (SIGKILL) with the scope if still running. */
const spawnService = (env: Record<string, string>): Effect.Effect<ServiceProcess, never, Scope.Scope> =>
  Effect.gen(function*() {
    const { args, command } = serviceCommand(path.join(HERE, "support", "sigterm-service.ts"))
    const child = spawn(command, [...args], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } })
    const lines: Array<string> = []
    const stderr: Array<string> = []
    const started = new Set<string>()
    const done = new Set<string>()
    let buffer = ""
    let exitLine: string | undefined
    let exit: ServiceProcess["exit"]
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
      buffer += chunk
      const parts = buffer.split("\n")
      buffer = parts.pop()!
      for (const line of parts) {
        lines.push(line)
        if (line.startsWith("start ")) started.add(line.slice(6))
        else if (line.startsWith("done ")) done.add(line.slice(5))
        else if (line.startsWith("exit ")) exitLine = line
      }
    })
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => void stderr.push(chunk))
    const exited = new Promise<void>((resolve) =>
      child.on("exit", (code, signal) => {
        exit = { code, signal }
        resolve()
      })
    )
    yield* Effect.addFinalizer(() => Effect.sync(() => void (exit === undefined && child.kill("SIGKILL"))))
    return {
      child,
      started,
      done,
      lines,
      stderr,
      get exitLine() {
        return exitLine
      },
      get exit() {
        return exit
      },
      exited: Effect.promise(() => exited),
      describe: () => `stdout: ${lines.slice(-5).join(" | ")}; stderr: ${stderr.join("").slice(-2_000)}`
    }
  })

test("nats faults: SIGTERM to a consuming service under load: in-flight work finishes, the rest is handed back, a second consumer handles it once", { timeout: 90_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { bus: b } = yield* bus({ servers: nats.url, source: "faults" })
    const TOTAL = 400
    const group = "graceful"
    const drainMs = 5_000
    yield* b.publishAll(AssetCreatedEvent, Array.from({ length: TOTAL }, (_, i) => ({ assetId: `term-${i}` })), {
      window: 64,
      publish: (message) => ({ eventId: message.assetId! })
    })

    // The service: 8 handlers of 200 ms each, drainTimeout 5 s, under runMain (SIGTERM = graceful shutdown).
    const service = yield* spawnService({ NATS_URL: nats.url, GROUP: group, CONCURRENCY: "8", HANDLER_MS: "200", DRAIN_MS: String(drainMs) })
    const { done, started, stderr } = service
    yield* waitFor(() => done.size >= 40 || service.exit !== undefined, "the service handles events", 30_000, service.describe)
    assert.equal(service.exit, undefined, `the service runs (${service.describe()})`)
    const inFlight = [...started].filter((id) => !done.has(id))
    const doneAtSignal = done.size
    const signalled = Date.now()
    service.child.kill("SIGTERM")
    yield* service.exited
    const exitMs = Date.now() - signalled

    // A second instance of the group takes over: it must get every event the service did not finish, promptly (the
    // hand-back is a NAK without delay; anything not handed back would wait for ackWait, 30 s, past this bound).
    const second = new Map<string, number>()
    const tookOver = Date.now()
    yield* b.subscribe(AssetCreatedEvent, (_event, delivery) =>
      Effect.sync(() => void second.set(delivery.eventId, (second.get(delivery.eventId) ?? 0) + 1)), { group, concurrency: 32 })
    const all = () => new Set([...done, ...second.keys()])
    yield* waitFor(() => all().size >= TOTAL, "the second consumer handles the rest", 20_000, () => `${all().size} of ${TOTAL}`)
    const restMs = Date.now() - tookOver
    yield* Effect.sleep("500 millis")

    const again = [...second.keys()].filter((id) => done.has(id))
    const figures = {
      sent: TOTAL,
      handledByService: done.size,
      inFlightAtSigterm: inFlight.length,
      finishedAfterSigterm: done.size - doneAtSignal,
      exit: service.exitLine,
      exitMs,
      drainTimeoutMs: drainMs,
      handledBySecond: second.size,
      handledAgainBySecond: again.length,
      duplicatesInSecond: [...second.values()].reduce((n, c) => n + c - 1, 0),
      secondFinishedInMs: restMs,
      lost: TOTAL - all().size
    }
    console.log(`sigterm: ${JSON.stringify(figures)}`)
    assert.ok(inFlight.length > 0, "handlers were running when SIGTERM arrived")
    assert.deepEqual(inFlight.filter((id) => !done.has(id)), [], "every handler running at SIGTERM finished")
    assert.ok(service.lines.includes("exiting"), "the service's scopes closed before it exited")
    assert.equal(service.exitLine, "exit 0", `the service exited with code 0 by itself (stderr: ${stderr.join("").slice(-2_000)})`)
    // Deno's child_process reports any child it sent SIGTERM as killed by SIGTERM; Node and Bun report the real end.
    if (!("Deno" in globalThis)) assert.deepEqual(service.exit, { code: 0, signal: null }, "the OS saw exit code 0, not death by SIGTERM")
    // Generous for a loaded machine: the drain budget plus start-up of nothing, connection drain and process exit.
    assert.ok(exitMs < drainMs + 10_000, `the service exited ${exitMs} ms after SIGTERM (drainTimeout ${drainMs} ms)`)
    assert.deepEqual(again, [], "nothing the service finished (and acked) is handled again")
    assert.equal(figures.duplicatesInSecond, 0, "the healthy instance handles each event once")
    assert.equal(all().size, TOTAL, "nothing is lost")
  })))

test("nats faults: a slow consumer facing a large backlog holds at most its pull capacity and keeps its memory bounded", { timeout: 120_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { bus: b, nats: transport } = yield* bus({ servers: nats.url, source: "faults" })
    // 40,000 events of ~1 KiB each (40 MiB in the stream): a consumer that buffered its backlog would grow by at
    // least that much; one that pulls only what it can handle grows by next to nothing.
    const BACKLOG = 40_000
    const padding = "x".repeat(1_000)
    const published = yield* b.publishAll(AssetCreatedEvent, Array.from({ length: BACKLOG }, (_, i) => ({ assetId: `slow-${i}`, symbol: padding })), {
      window: 256
    })
    assert.equal(published.filter(Result.isSuccess).length, BACKLOG, "the backlog is stored")

    const concurrency = 8
    // The pull consumer asks for at most 2 × its in-flight limit (handler slots plus one read-ahead slot each).
    const capacity = 2 * concurrency
    const memory = () => process.memoryUsage()
    const gc = (globalThis as { readonly gc?: () => void }).gc
    gc?.()
    yield* Effect.sleep("200 millis")
    const before = memory()
    let peakRss = before.rss
    let peakHeap = before.heapUsed
    let maxAckPending = 0
    let handled = 0
    yield* b.subscribe(AssetCreatedEvent, () => Effect.andThen(Effect.sleep("2 millis"), Effect.sync(() => void handled++)), {
      group: "slow",
      concurrency
    })
    const jsm = yield* Effect.promise(() => jetstreamManager(transport.connection))
    // Until the consumer has worked through a slice of the backlog (a count, not a time): sample memory and what the
    // server has delivered to it and not seen acked.
    const TARGET = 4_000
    while (handled < TARGET) {
      const now = memory()
      peakRss = Math.max(peakRss, now.rss)
      peakHeap = Math.max(peakHeap, now.heapUsed)
      const info = yield* Effect.promise(() => jsm.consumers.info(transport.stream, "slow"))
      maxAckPending = Math.max(maxAckPending, info.num_ack_pending)
      yield* Effect.sleep("50 millis")
    }
    const info = yield* Effect.promise(() => jsm.consumers.info(transport.stream, "slow"))
    const MiB = 1024 * 1024
    // The bound: a fixed allowance for the runtime's own churn (JIT, garbage not yet collected: heap growth up to
    // 20 MiB on Deno, socket buffers) plus 64 KiB per message the consumer may hold, below the 40 MiB an unbounded
    // buffer of this backlog would take.
    const allowance = 32 * MiB + capacity * 64 * 1024
    const figures = {
      backlog: BACKLOG,
      handled,
      pending: info.num_pending,
      maxAckPending,
      capacity,
      rssGrowthMiB: +((peakRss - before.rss) / MiB).toFixed(1),
      heapGrowthMiB: +((peakHeap - before.heapUsed) / MiB).toFixed(1),
      boundMiB: +(allowance / MiB).toFixed(1),
      gc: gc !== undefined
    }
    console.log(`slow consumer: ${JSON.stringify(figures)}`)
    assert.ok(info.num_pending > BACKLOG / 2, "most of the backlog was still waiting on the server")
    // The server counts a delivery as pending until it has processed its ack, and it processes acks and the next pull
    // request on separate paths, so acks still in transit show on top of the capacity (up to 27 with capacity 16 seen
    // on a loaded machine); four times the capacity is a firm bound, far below the consumer's max_ack_pending (1000)
    // that a client pulling without regard to its handlers reaches.
    assert.ok(maxAckPending <= 4 * capacity,
      `the server never had more than ${4 * capacity} deliveries out to the consumer (saw ${maxAckPending}, capacity ${capacity})`)
    assert.ok(peakHeap - before.heapUsed < allowance, `heap grew by ${figures.heapGrowthMiB} MiB (bound ${figures.boundMiB} MiB)`)
    assert.ok(peakRss - before.rss < allowance, `RSS grew by ${figures.rssGrowthMiB} MiB (bound ${figures.boundMiB} MiB)`)
  })))

test("nats faults: a second SIGTERM while the service drains stuck handlers exits at once with code 130", { timeout: 60_000 }, () =>
  run(Effect.gen(function*() {
    const nats = yield* server()
    const { bus: b } = yield* bus({ servers: nats.url, source: "faults" })
    yield* b.publishAll(AssetCreatedEvent, Array.from({ length: 20 }, (_, i) => ({ assetId: `twice-${i}` })))
    // Handlers that take a minute and a drain budget of a minute: only the second signal can end this quickly.
    const service = yield* spawnService({ NATS_URL: nats.url, GROUP: "twice", CONCURRENCY: "4", HANDLER_MS: "60000", DRAIN_MS: "60000" })
    yield* waitFor(() => service.started.size >= 4 || service.exit !== undefined, "the handlers are running", 30_000, service.describe)
    // process.kill rather than child.kill: Deno's child_process sends a child only one signal.
    process.kill(service.child.pid!, "SIGTERM")
    yield* Effect.sleep("300 millis")
    assert.equal(service.exit, undefined, "the first SIGTERM waits for the running handlers (drainTimeout 60 s)")
    const second = Date.now()
    process.kill(service.child.pid!, "SIGTERM")
    // Bounded: without the second-signal exit the service would wait for its 60 s handlers.
    yield* waitFor(() => service.exit !== undefined, "the service exits after the second SIGTERM", 15_000, service.describe)
    const exitMs = Date.now() - second
    console.log(`second sigterm: ${JSON.stringify({ handlersRunning: service.started.size - service.done.size, exit: service.exitLine, exitMs })}`)
    assert.equal(service.done.size, 0, "no handler finished")
    assert.equal(service.exitLine, "exit 130", `the service exited with code 130 (${service.describe()})`)
    assert.ok(exitMs < 15_000, `the service exited ${exitMs} ms after the second SIGTERM`)
  })))
