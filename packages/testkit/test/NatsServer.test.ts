import assert from "node:assert/strict"
import { spawn } from "node:child_process"
import fs from "node:fs"
import fsp from "node:fs/promises"
import net from "node:net"
import os from "node:os"
import path from "node:path"
import process from "node:process"
import { test } from "node:test"
import { fileURLToPath, pathToFileURL } from "node:url"
import { Effect } from "effect"
import { NatsServer, NatsServerError, type NatsServerOptions, type NatsServerShape } from "@cqbus/testkit/nats-server"

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..")

/** Connects to 127.0.0.1:port and returns the server's first line, `INFO {...}`, parsed. */
const readInfo = (port: number): Promise<Record<string, unknown>> =>
  new Promise((resolve, reject) => {
    const socket = net.connect({ host: "127.0.0.1", port })
    let buffer = ""
    const timer = setTimeout(() => fail(new Error(`no INFO from port ${port}`)), 5_000)
    const fail = (error: Error): void => {
      clearTimeout(timer)
      socket.destroy()
      reject(error)
    }
    socket.setEncoding("utf8")
    socket.on("error", fail)
    socket.on("data", (chunk: string) => {
      buffer += chunk
      const end = buffer.indexOf("\r\n")
      if (end < 0) return
      clearTimeout(timer)
      socket.destroy()
      const line = buffer.slice(0, end)
      if (!line.startsWith("INFO ")) return reject(new Error(`not an INFO line: ${line}`))
      resolve(JSON.parse(line.slice(5)) as Record<string, unknown>)
    })
  })

/** The error code of a TCP connect to 127.0.0.1:port, or "connected". */
const connectResult = (port: number): Promise<string> =>
  new Promise((resolve) => {
    const socket = net.connect({ host: "127.0.0.1", port })
    socket.on("connect", () => {
      socket.destroy()
      resolve("connected")
    })
    socket.on("error", (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message))
  })

/**
 * Sends JetStream API requests over the raw NATS protocol (no client library): one connection, one reply subject,
 * one request at a time.
 */
const jsRequests = async <A>(
  port: number,
  requests: ReadonlyArray<readonly [subject: string, body: unknown]>
): Promise<Array<A>> => {
  const socket = net.connect({ host: "127.0.0.1", port })
  socket.setEncoding("utf8")
  let buffer = ""
  let waiting: ((payload: string) => void) | undefined
  let failed: ((error: Error) => void) | undefined
  socket.on("error", (error) => failed?.(error))
  socket.on("data", (chunk: string) => {
    buffer += chunk
    for (;;) {
      const end = buffer.indexOf("\r\n")
      if (end < 0) return
      const line = buffer.slice(0, end)
      if (line.startsWith("MSG ")) {
        // `MSG <subject> <sid> [reply] <size>`; JetStream's acks come with two spaces where the reply would be
        const size = Number(line.trim().split(/\s+/).pop())
        if (buffer.length < end + 2 + size + 2) return
        const payload = buffer.slice(end + 2, end + 2 + size)
        buffer = buffer.slice(end + 2 + size + 2)
        waiting?.(payload)
        continue
      }
      buffer = buffer.slice(end + 2)
      if (line === "PING") socket.write("PONG\r\n")
      else if (line.startsWith("-ERR")) failed?.(new Error(line))
    }
  })
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once("connect", resolve)
      socket.once("error", reject)
    })
    socket.write(`CONNECT {"verbose":false,"pedantic":false}\r\nSUB _INBOX.test 1\r\n`)
    const replies: Array<A> = []
    for (const [subject, body] of requests) {
      const payload = typeof body === "string" ? body : JSON.stringify(body)
      const reply = new Promise<string>((resolve, reject) => {
        waiting = resolve
        failed = reject
        setTimeout(() => reject(new Error(`no reply to ${subject}`)), 5_000).unref()
      })
      socket.write(`PUB ${subject} _INBOX.test ${Buffer.byteLength(payload)}\r\n${payload}\r\n`)
      replies.push(JSON.parse(await reply) as A)
    }
    return replies
  } finally {
    socket.destroy()
  }
}

const exists = (p: string): Promise<boolean> => fsp.access(p).then(() => true, () => false)

/** Whether `pid` is a live process (a zombie counts as gone). */
const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
  } catch {
    return false
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z"
  } catch {
    return true
  }
}

const start = (options?: NatsServerOptions): Promise<NatsServerShape> => NatsServer.start(options)

test("NatsServer.start starts JetStream on a free loopback port with a fresh store under the temp directory", async () => {
  const server = await start()
  try {
    assert.equal(server.url, `nats://127.0.0.1:${server.port}`)
    assert.ok(server.isRunning)
    assert.ok(server.pid > 0)
    assert.equal(path.dirname(server.storeDir), path.resolve(os.tmpdir()))
    assert.match(path.basename(server.storeDir), /^cqbus-nats-/)
    assert.ok(await exists(path.join(server.storeDir, "jetstream")), "JetStream created its directory in the store")
    assert.equal(server.monitorPort, undefined, "monitoring is off by default")
    const info = await readInfo(server.port)
    assert.equal(info.jetstream, true)
    assert.equal(info.host, "127.0.0.1")
    assert.equal(info.port, server.port)
    assert.ok(server.log.some((line) => line.includes("Server is ready")), "the log tail is kept")
  } finally {
    await server.cleanup()
  }
})

/** Starts a server, ends it with `end`, checks its process is gone and `andThen`, and ends it a second time (a no-op). */
const endsTheProcess = async (end: (server: NatsServerShape) => Promise<void>, andThen: (server: NatsServerShape) => Promise<void>) => {
  const server = await start()
  try {
    const pid = server.pid
    await end(server)
    assert.equal(server.isRunning, false)
    assert.equal(alive(pid), false)
    await andThen(server)
    await end(server)
  } finally {
    await server.cleanup()
  }
}

test("kill() ends the server like a crash: the port refuses connections", () =>
  endsTheProcess((server) => server.kill(), async (server) => {
    assert.equal(await connectResult(server.port), "ECONNREFUSED")
  }))

test("stop() ends the server gracefully and is a no-op once stopped", async () => {
  const server = await start()
  try {
    await server.stop()
    assert.equal(server.isRunning, false)
    assert.ok(server.log.some((line) => line.includes("Server Exiting")), "the server shut down on SIGTERM")
    assert.equal(await connectResult(server.port), "ECONNREFUSED")
    await server.stop()
  } finally {
    await server.cleanup()
  }
})

test("restart() after a kill comes back on the same port with the same store and its streams", async () => {
  const server = await start()
  try {
    const { port, storeDir, url } = server
    const [created, ack] = await jsRequests<{ config?: { name: string }; seq?: number }>(port, [
      ["$JS.API.STREAM.CREATE.RESTART", { name: "RESTART", subjects: ["restart.>"], storage: "file" }],
      ["restart.one", "kept across the crash"]
    ])
    assert.equal(created?.config?.name, "RESTART")
    assert.equal(ack?.seq, 1)
    const firstPid = server.pid
    await server.kill()
    await server.restart()
    assert.ok(server.isRunning)
    assert.notEqual(server.pid, firstPid)
    assert.equal(server.port, port)
    assert.equal(server.url, url)
    assert.equal(server.storeDir, storeDir)
    assert.ok(await exists(path.join(storeDir, "jetstream")))
    assert.equal((await readInfo(port)).jetstream, true)
    const [info] = await jsRequests<{ state?: { messages: number } }>(port, [["$JS.API.STREAM.INFO.RESTART", ""]])
    assert.equal(info?.state?.messages, 1, "the stream and its message survived the kill")
    // restart() of a running server stops it first
    await server.restart()
    assert.equal((await readInfo(port)).jetstream, true)
  } finally {
    await server.cleanup()
  }
})

test("restart() waits while something else holds the port, and gives up with a clear error after startTimeout", async () => {
  const server = await start({ startTimeout: 2_000 })
  const squatter = net.createServer()
  try {
    await server.stop()
    await new Promise<void>((resolve, reject) => {
      squatter.once("error", reject)
      squatter.listen({ host: "127.0.0.1", port: server.port }, resolve)
    })
    setTimeout(() => squatter.close(), 300)
    await server.restart()
    assert.equal((await readInfo(server.port)).jetstream, true)
    assert.ok(server.log.some((line) => /address already in use/.test(line)), "the first attempts found the port taken")

    await server.stop()
    const holder = net.createServer()
    await new Promise<void>((resolve) => holder.listen({ host: "127.0.0.1", port: server.port }, resolve))
    try {
      await assert.rejects(server.restart(), (error: unknown) => {
        assert.ok(error instanceof NatsServerError)
        assert.match(error.message, new RegExp(`port ${server.port} stayed in use for 2000 ms`))
        assert.match(error.message, /address already in use/)
        return true
      })
      assert.equal(server.isRunning, false)
    } finally {
      await new Promise((resolve) => holder.close(resolve))
    }
  } finally {
    squatter.close()
    await server.cleanup()
  }
})

test("cleanup() stops the server and removes its store directory", () =>
  endsTheProcess((server) => server.cleanup(), async (server) => {
    assert.equal(await exists(server.storeDir), false)
  }))

test("two servers at once get different ports and stores", async () => {
  const servers: Array<NatsServerShape> = []
  try {
    servers.push(await start())
    servers.push(await start())
    const [a, b] = servers
    assert.ok(a !== undefined && b !== undefined)
    assert.notEqual(a.port, b.port)
    assert.notEqual(a.storeDir, b.storeDir)
    const [infoA, infoB] = await Promise.all([readInfo(a.port), readInfo(b.port)])
    assert.notEqual(infoA.server_id, infoB.server_id)
  } finally {
    await Promise.all(servers.map((server) => server.cleanup()))
  }
})

test("options set the payload limit, JetStream limits, auth and a monitoring port", async () => {
  const server = await start({
    maxPayload: 2048,
    jetstream: { maxMemory: 1024 * 1024, maxFile: 8 * 1024 * 1024 },
    token: "s3cret",
    monitoring: true
  })
  try {
    const info = await readInfo(server.port)
    assert.equal(info.max_payload, 2048)
    assert.equal(info.auth_required, true)
    assert.ok(server.monitorPort !== undefined && server.monitorPort !== server.port)
    assert.equal(server.monitorUrl, `http://127.0.0.1:${server.monitorPort}`)
    const varz = (await (await fetch(`${server.monitorUrl}/varz`)).json()) as {
      jetstream?: { config?: { max_memory?: number; max_storage?: number } }
    }
    assert.equal(varz.jetstream?.config?.max_memory, 1024 * 1024)
    assert.equal(varz.jetstream?.config?.max_storage, 8 * 1024 * 1024)
  } finally {
    await server.cleanup()
  }
})

test("a missing binary fails with a clear error and leaves no store behind", async () => {
  const stores = async (): Promise<Array<string>> =>
    (await fsp.readdir(os.tmpdir())).filter((name) => name.startsWith("cqbus-nats-")).sort()
  const before = await stores()
  let server: NatsServerShape | undefined
  try {
    await assert.rejects(
      async () => {
        server = await start({ binary: "nats-server-does-not-exist" })
      },
      (error: unknown) => {
        assert.ok(error instanceof NatsServerError)
        assert.match(error.message, /nats-server-does-not-exist not found on PATH; install the Debian package nats-server/)
        assert.match(error.message, /command: nats-server-does-not-exist -a 127\.0\.0\.1 -p \d+ -js -sd /)
        return true
      }
    )
    assert.deepEqual(await stores(), before)
    const failure = await Effect.runPromise(Effect.flip(Effect.scoped(NatsServer.make({ binary: "nats-server-does-not-exist" }))))
    assert.equal(failure._tag, "NatsServerError")
  } finally {
    await server?.cleanup()
  }
})

test("a server that exits before it is ready fails with its log tail", async () => {
  let server: NatsServerShape | undefined
  try {
    await assert.rejects(
      async () => {
        server = await start({ args: ["--no-such-flag"] })
      },
      (error: unknown) => {
        assert.ok(error instanceof NatsServerError)
        assert.match(error.message, /exited with code \d+ before it was ready/)
        assert.match(error.message, /flag provided but not defined: -no-such-flag/)
        return true
      }
    )
  } finally {
    await server?.cleanup()
  }
})

test("NatsServer.layer provides NatsServer.NatsServer for the scope and cleans it up when the scope closes", async () => {
  let seen: NatsServerShape | undefined
  try {
    const info = await Effect.runPromise(
      Effect.gen(function*() {
        const server = yield* NatsServer.NatsServer
        seen = server
        return yield* Effect.promise(() => readInfo(server.port))
      }).pipe(Effect.provide(NatsServer.layer()))
    )
    assert.equal(info.jetstream, true)
    assert.ok(seen !== undefined)
    assert.equal(seen.isRunning, false)
    assert.equal(await exists(seen.storeDir), false)
  } finally {
    await seen?.cleanup()
  }
})

test("a server a test file never cleans up is killed, and its store removed, when its runner exits", async () => {
  // The child is a test file run by this runtime's own test runner, with a skipped test so that Deno would skip a
  // top-level after(): only the launcher's exit backstop can clean up.
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "cqbus-nats-test-"))
  let reported: { readonly pid: number; readonly storeDir: string } | undefined
  try {
    const script = path.join(dir, "leave-running.test.mjs")
    const module = pathToFileURL(path.join(ROOT, "packages/testkit/src/NatsServer.ts")).href
    await fsp.writeFile(
      script,
      `import { test } from "node:test"\n` +
        `import { start } from ${JSON.stringify(module)}\n` +
        `test("leaves a server running", async () => {\n` +
        `  const server = await start()\n` +
        `  console.log("SERVER " + JSON.stringify({ pid: server.pid, storeDir: server.storeDir }))\n` +
        `})\n` +
        `test("is skipped", { skip: "so that Deno skips top-level after() hooks" }, () => {})\n`
    )
    const versions = process.versions as Record<string, string | undefined>
    // --conditions: NatsServer.ts imports @cqbus/core (its errors), which resolves to src/ as in the parent run
    const args = versions.deno !== undefined
      // --config: the script lies outside the workspace, and NatsServer.ts needs its import map for `effect`
      ? ["test", "-A", "--no-check", "--no-lock", "--conditions=@cqbus/source", `--config=${path.join(ROOT, "deno.json")}`, script]
      : versions.bun !== undefined
      ? ["--conditions=@cqbus/source", "test", script]
      : ["--conditions=@cqbus/source", "--import", "tsx", "--test", script]
    const env = { ...process.env }
    // a nested node --test would otherwise report to this runner in its binary protocol
    delete env.NODE_TEST_CONTEXT
    const child = spawn(process.execPath, args, { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"] })
    let out = ""
    child.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()))
    child.stderr.on("data", (chunk: Buffer) => (out += chunk.toString()))
    let timer: ReturnType<typeof setTimeout> | undefined
    const code = await Promise.race([
      new Promise<number | null>((resolve) => child.on("close", (c) => resolve(c))),
      new Promise<"hung">((resolve) => (timer = setTimeout(() => resolve("hung"), 60_000)))
    ])
    clearTimeout(timer)
    if (code === "hung") child.kill("SIGKILL")
    const json = /SERVER (\{.*?\})/.exec(out)?.[1]
    if (json !== undefined) reported = JSON.parse(json) as { pid: number; storeDir: string }
    assert.equal(code, 0, `the child's test runner exits by itself and passes; output:\n${out}`)
    assert.ok(reported !== undefined, `the child reports its server; output:\n${out}`)
    const { pid, storeDir } = reported
    for (let i = 0; i < 50 && alive(pid); i++) await new Promise((r) => setTimeout(r, 100))
    assert.equal(alive(pid), false, `nats-server ${pid} was killed`)
    assert.equal(await exists(storeDir), false, `${storeDir} was removed`)
  } finally {
    // if the backstop failed, do its work here so that nothing outlives the test
    if (reported !== undefined && alive(reported.pid)) process.kill(reported.pid, "SIGKILL")
    if (reported !== undefined) await fsp.rm(reported.storeDir, { recursive: true, force: true })
    await fsp.rm(dir, { recursive: true, force: true })
  }
})
