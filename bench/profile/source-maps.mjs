// Profiling aid for bench/nats.ts (and any bench run through tsx): at exit, writes the source maps of the loaded
// TypeScript sources of packages/*/src and bench/ to $DUMP_MAPS (default cqbus-source-maps.json). tsx serves
// whitespace-minified code, so the positions in a `--cpu-prof` profile are meaningless without them;
// bench/profile/summary.mjs maps them back to the sources' lines. Load it after tsx:
//
//   node --cpu-prof --cpu-prof-dir=prof --conditions=@cqbus/source --import tsx \
//     --import ./bench/profile/source-maps.mjs bench/nats.ts
import { readdirSync, statSync, writeFileSync } from "node:fs"
import { findSourceMap } from "node:module"
import { dirname, join } from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..")
const files = []
const walk = (dir) => {
  for (const entry of readdirSync(dir)) {
    const path = join(dir, entry)
    if (statSync(path).isDirectory()) {
      if (entry !== "node_modules" && entry !== "dist") walk(path)
    } else if (path.endsWith(".ts")) files.push(path)
  }
}
walk(join(root, "packages"))
walk(join(root, "bench"))

process.on("exit", () => {
  const maps = {}
  for (const file of files) {
    const url = pathToFileURL(file).href
    const map = findSourceMap(url) ?? findSourceMap(file)
    if (map !== undefined) maps[url] = map.payload
  }
  writeFileSync(process.env.DUMP_MAPS ?? "cqbus-source-maps.json", JSON.stringify(maps))
})
