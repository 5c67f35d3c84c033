#!/usr/bin/env node
// Type-checks the code the documentation shows: every ```ts block of a JSDoc `@example` in packages/*/src/**/*.ts,
// and every ```ts block of README.md, packages/*/README.md and docs/*.md. Each snippet becomes its own module in
// .snippets/ (inside the repository, so `@cqbus/*` resolve through the workspace, to src/ via the @cqbus/source
// condition, and `effect`, `hono`, ... through node_modules), and one `tsc --noEmit` checks them all with the
// repository's compiler settings, minus the ones that only make sense for library sources (unused locals and
// parameters, isolatedDeclarations: a snippet may define a `program` it never runs). Errors are reported at the
// file:line of the snippet's source.
//
// A snippet that is deliberately partial (it continues an earlier one, or shows a fragment) is marked `skip` in its
// fence, ```ts skip, and is left out; keep those rare. Blocks in other languages (sh, yaml, json, proto) are not
// checked.
//
// Usage (repo root, after `npm ci`):
//   node scripts/check-snippets.mjs [--keep]      (npm run check:snippets)
//   --keep   leave .snippets/ in place (it is git-ignored)
// Exit code 0 when every snippet type-checks, 1 otherwise.
import { spawnSync } from "node:child_process"
import fs from "node:fs"
import path from "node:path"
import { fileURLToPath } from "node:url"

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
const OUT = path.join(ROOT, ".snippets")
const keep = process.argv.includes("--keep")

/** Files under `dir` (relative to ROOT) whose name passes `accept`, skipping node_modules, dist and gen. */
const walk = (dir, accept) => {
  const found = []
  const visit = (rel) => {
    for (const entry of fs.readdirSync(path.join(ROOT, rel), { withFileTypes: true })) {
      const child = path.posix.join(rel, entry.name)
      if (entry.isDirectory()) {
        if (!["node_modules", "dist", "gen"].includes(entry.name) && !entry.name.startsWith(".")) visit(child)
      } else if (accept(entry.name)) found.push(child)
    }
  }
  if (fs.existsSync(path.join(ROOT, dir))) visit(dir)
  return found.sort()
}

/**
 * The fenced ```ts blocks of `lines`, as { line (1-based, first code line), code }. `prefix` strips what precedes
 * each line (a JSDoc ` * `); `inside` says which lines may hold a block (JSDoc: only after an `@example` tag).
 */
const fencedBlocks = (lines, { prefix = /^/, inside = () => true } = {}) => {
  const blocks = []
  let open
  lines.forEach((raw, index) => {
    const line = raw.replace(prefix, "")
    const fence = /^(\s*)```(\S*)(.*)$/.exec(line)
    if (open === undefined) {
      if (fence && ["ts", "typescript"].includes(fence[2]) && inside(index)) {
        open = { line: index + 2, indent: fence[1].length, skip: /\bskip\b/.test(fence[3]), code: [] }
      } else if (fence && fence[2] !== "") {
        open = { line: index + 2, indent: 0, skip: true, code: [] } // another language: step over it
      }
    } else if (fence && fence[2] === "" && fence[3].trim() === "") {
      if (!open.skip) blocks.push({ line: open.line, code: open.code.join("\n") })
      open = undefined
    } else {
      open.code.push(line.slice(Math.min(open.indent, line.length - line.trimStart().length)))
    }
  })
  return blocks
}

const snippets = []
for (const file of [
  "README.md",
  ...walk("packages", (name) => name === "README.md").filter((f) => f.split("/").length === 3),
  ...walk("docs", (name) => name.endsWith(".md"))
]) {
  const lines = fs.readFileSync(path.join(ROOT, file), "utf8").split("\n")
  for (const block of fencedBlocks(lines)) snippets.push({ file, ...block })
}
for (const file of walk("packages", (name) => name.endsWith(".ts")).filter((f) => f.split("/")[2] === "src")) {
  const lines = fs.readFileSync(path.join(ROOT, file), "utf8").split("\n")
  // Only blocks in a /** */ comment after an @example tag, up to the next tag or the end of the comment.
  const example = lines.map(() => false)
  let inExample = false
  lines.forEach((line, index) => {
    if (/^\s*\/\*\*/.test(line)) inExample = false
    if (/^\s*\*\s*@example\b/.test(line)) inExample = true
    else if (/^\s*\*\s*@\w+/.test(line) && !/```/.test(line)) inExample = false
    example[index] = inExample
    if (/\*\//.test(line)) inExample = false
  })
  for (const block of fencedBlocks(lines, { prefix: /^\s*\* ?/, inside: (index) => example[index] })) {
    snippets.push({ file, ...block })
  }
}

fs.rmSync(OUT, { recursive: true, force: true })
fs.mkdirSync(OUT)
const bySnippet = new Map()
snippets.forEach((snippet, index) => {
  const name = `snippet${String(index).padStart(3, "0")}.ts`
  bySnippet.set(name, snippet)
  // `export {}` makes every snippet a module, so two snippets' top-level names never collide.
  fs.writeFileSync(path.join(OUT, name), `${snippet.code}\nexport {}\n`)
})
fs.writeFileSync(
  path.join(OUT, "tsconfig.json"),
  JSON.stringify(
    {
      extends: "../tsconfig.base.json",
      compilerOptions: {
        noEmit: true,
        declaration: false,
        isolatedDeclarations: false,
        noUnusedLocals: false,
        noUnusedParameters: false,
        types: ["node"]
      },
      include: ["*.ts"]
    },
    null,
    2
  )
)

const tsc = spawnSync(process.execPath, [path.join(ROOT, "node_modules/typescript/bin/tsc"), "-p", OUT, "--pretty", "false"], {
  cwd: ROOT,
  encoding: "utf8"
})
if (!keep) fs.rmSync(OUT, { recursive: true, force: true })
const output = `${tsc.stdout}${tsc.stderr}`
if (tsc.status === 0) {
  console.log(`check-snippets: OK (${snippets.length} snippets from ${new Set(snippets.map((s) => s.file)).size} files type-check)`)
  process.exit(0)
}
// `.snippets/snippet012.ts(3,5): error TS2307: ...` → `docs/codegen.md:57:5: error TS2307: ...`
let errors = 0
for (const line of output.split("\n")) {
  const match = /^(?:\.snippets[\\/])?(snippet\d+\.ts)\((\d+),(\d+)\): (.*)$/.exec(line)
  const snippet = match && bySnippet.get(match[1])
  if (snippet) {
    errors++
    console.error(`${snippet.file}:${snippet.line + Number(match[2]) - 1}:${match[3]}: ${match[4]}`)
  } else if (line.trim() !== "") console.error(line)
}
console.error(`check-snippets: FAILED: ${errors} error(s) in the snippets above (of ${snippets.length}); mark a deliberately partial one \`\`\`ts skip`)
process.exit(1)
