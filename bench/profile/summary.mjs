// Self time per function and per area of a `.cpuprofile`, as a share of the busy (non-idle) time, with tsx positions
// mapped back to the TypeScript sources through the maps of bench/profile/source-maps.mjs.
//
//   node bench/profile/summary.mjs PROFILE.cpuprofile [MAPS.json] [TOP=40]
//
// MARKS=file (written by bench/nats.ts with BENCH_MARKS=file) keeps only the samples inside the timed runs;
// SIDE=raw|cqbus and CASE=substring narrow them to one side and one case. FILTER=substring lists only the functions
// whose "name file:line" contains it.
import { readFileSync } from "node:fs"
import { SourceMap } from "node:module"

const [profilePath, mapsPath, top = "40"] = process.argv.slice(2)
if (profilePath === undefined) {
  console.error("usage: node bench/profile/summary.mjs PROFILE.cpuprofile [MAPS.json] [TOP]")
  process.exit(2)
}
const profile = JSON.parse(readFileSync(profilePath, "utf8"))
const maps = Object.fromEntries(
  Object.entries(mapsPath ? JSON.parse(readFileSync(mapsPath, "utf8")) : {}).map(([url, payload]) => [
    url,
    new SourceMap(payload)
  ])
)
const windows = process.env.MARKS === undefined
  ? undefined
  : JSON.parse(readFileSync(process.env.MARKS, "utf8")).filter((m) =>
    (process.env.SIDE === undefined || m.side === process.env.SIDE) &&
    (process.env.CASE === undefined || m.case.includes(process.env.CASE))
  )

const nodes = new Map(profile.nodes.map((n) => [n.id, n]))
const self = new Map()
let total = 0
let t = profile.startTime
for (let i = 0; i < profile.samples.length; i++) {
  const dt = profile.timeDeltas[i] ?? 0
  t += dt
  if (windows !== undefined && !windows.some((w) => t >= w.start && t <= w.end)) continue
  self.set(profile.samples[i], (self.get(profile.samples[i]) ?? 0) + dt)
  total += dt
}

const rootUrl = new URL("../..", import.meta.url).href
const where = (frame) => {
  const map = maps[frame.url]
  const entry = map?.findEntry(frame.lineNumber, frame.columnNumber)
  const line = entry?.originalLine !== undefined ? entry.originalLine + 1 : frame.lineNumber + 1
  return `${frame.url.replace(rootUrl, "").replace(/^node_modules\//, "")}:${line}`
}
const area = (frame) => {
  const url = frame.url
  if (url === "") return frame.functionName.startsWith("(") ? frame.functionName : "(native/builtin)"
  if (url.includes("/packages/core/")) return "cqbus core"
  if (url.includes("/packages/nats/")) return "cqbus nats"
  if (url.includes("/packages/")) return "cqbus other packages"
  if (url.includes("/bench/")) return "bench"
  if (url.includes("node_modules/effect/")) return "effect runtime"
  if (url.includes("@nats-io/")) return "nats.js"
  if (url.includes("@bufbuild/")) return "protobuf"
  if (url.startsWith("node:")) return "node internals"
  return `other: ${url.split("/").slice(-3).join("/")}`
}

const byFunction = new Map()
const byArea = new Map()
for (const [id, time] of self) {
  const frame = nodes.get(id).callFrame
  const key = `${frame.functionName || "(anonymous)"} ${where(frame)}`
  byFunction.set(key, (byFunction.get(key) ?? 0) + time)
  const a = area(frame)
  byArea.set(a, (byArea.get(a) ?? 0) + time)
}
const idle = byArea.get("(idle)") ?? 0
const busy = total - idle
const pct = (x) => `${((100 * x) / busy).toFixed(2).padStart(6)} %`
if (windows !== undefined) console.log(`${windows.length} timed runs`)
console.log(`sampled ${(total / 1e6).toFixed(2)} s, idle ${(idle / 1e6).toFixed(2)} s, busy ${(busy / 1e6).toFixed(2)} s; shares of busy time`)
for (const [name, time] of [...byArea].sort((a, b) => b[1] - a[1])) if (name !== "(idle)") console.log(`${pct(time)}  ${name}`)
console.log("")
const filter = process.env.FILTER
for (
  const [name, time] of [...byFunction]
    .filter(([name]) => !name.startsWith("(idle)") && (filter === undefined || name.includes(filter)))
    .sort((a, b) => b[1] - a[1])
    .slice(0, Number(top))
) console.log(`${pct(time)}  ${name}`)
