#!/usr/bin/env node
// Follows docs/codegen.md ("In your own project") the way a new user does, in a fresh project OUTSIDE the repository,
// so that nothing resolves through the workspace: it builds (tsup, the packages' prepack) and `npm pack`s @cqbus/core,
// @cqbus/rpc, @cqbus/nats and protoc-gen-cqbus, installs the tarballs (plus effect, @bufbuild/protobuf, @bufbuild/buf,
// @bufbuild/protoc-gen-es and typescript at the versions this repository pins) into a temporary project, imports
// @cqbus/core, @cqbus/rpc and @cqbus/nats there in plain Node, writes its own .proto (an event with a
// key_field, one with a key_field and a topic override), and then for each variant (target=ts + import_extension=ts,
// import_extension=js, target=js+dts) runs `buf generate`, type-checks with tsc and runs a program that publishes and
// subscribes the generated events on EventBus.layerMemory(), checking the topic and key it prints.
//
// The buf.yaml, buf.gen.yaml and tsconfig files are read from the `<!-- fresh-project: NAME -->` blocks of
// docs/codegen.md, so the documentation and this check cannot drift apart. The runtime packages are installed with
// --engine-strict: on Node 20 this also checks that their whole dependency tree allows Node 20 (issue 10). The
// generators are installed without it: @bufbuild/protoc-gen-es 2.17 declares node >= 22 although it runs on 20.
//
// Usage (repo root, after `npm ci`; needs the npm registry or a warm npm cache):
//   node scripts/check-fresh-project.mjs [--keep]      (npm run check:fresh-project)
//   --keep   leave the temporary directory in place and print its path
// Exit code 0 when every variant generated, type-checked and ran as expected; 1 otherwise, with the failing step,
// its command and output.
import { execFileSync } from "node:child_process"
import fs from "node:fs"
import os from "node:os"
import path from "node:path"
import { fileURLToPath } from "node:url"

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
const DOC = path.join(ROOT, "docs/codegen.md")
const keep = process.argv.includes("--keep")
const started = Date.now()
const log = (message) => console.log(`check-fresh-project [${((Date.now() - started) / 1000).toFixed(0)}s]: ${message}`)

const fail = (message) => {
  console.error(`check-fresh-project: FAILED: ${message}`)
  process.exit(1)
}

/** Runs a command, streaming nothing; on failure prints the command and its output and exits 1. */
const run = (cwd, command, args, env = {}) => {
  try {
    return execFileSync(command, args, {
      cwd,
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, ...env },
      timeout: 300_000
    })
  } catch (error) {
    // The temporary project is left in place for a look.
    fail(`${cwd}$ ${command} ${args.join(" ")}\n${error.stdout ?? ""}${error.stderr ?? error.message}`)
  }
}

// ---- the documented files, taken from docs/codegen.md
/** Every `<!-- fresh-project: NAME -->` marker followed by a fenced block, as NAME → content (dedented). */
const docBlocks = () => {
  const text = fs.readFileSync(DOC, "utf8")
  const blocks = new Map()
  const marker = /<!-- fresh-project: (.+?) -->\n([ \t]*)```[a-z]*\n([\s\S]*?)\n[ \t]*```/g
  for (const [, name, indent, body] of text.matchAll(marker)) {
    blocks.set(name, body.split("\n").map((line) => line.startsWith(indent) ? line.slice(indent.length) : line).join("\n") + "\n")
  }
  return blocks
}
const blocks = docBlocks()
const block = (name) => blocks.get(name) ?? fail(`docs/codegen.md has no <!-- fresh-project: ${name} --> block`)

// ---- versions the repository pins
const rootPkg = JSON.parse(fs.readFileSync(path.join(ROOT, "package.json"), "utf8"))
const lock = JSON.parse(fs.readFileSync(path.join(ROOT, "package-lock.json"), "utf8"))
const pinned = (name) =>
  rootPkg.devDependencies?.[name] ?? lock.packages?.[`node_modules/${name}`]?.version ?? fail(`no pinned version of ${name}`)

// ---- pack
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "cqbus-fresh-"))
const packs = path.join(tmp, "packs")
fs.mkdirSync(packs)
const tarball = {}
for (const workspace of ["packages/core", "packages/rpc", "packages/nats", "packages/protoc-gen-cqbus"]) {
  // `npm pack` runs the package's prepack (its build); core first, the others' declarations import it.
  const out = run(ROOT, "npm", ["pack", "--workspace", workspace, "--pack-destination", packs, "--json", "--silent"])
  // The build's own output (tsup, coloured under CI) comes first; npm's JSON array starts on a line of its own.
  const [{ name, filename, files }] = JSON.parse(out.slice(out.search(/^\[\s*$/m)))
  tarball[name] = path.join(packs, filename)
  log(`packed ${name} (${files.length} files)`)
}

// ---- the fresh project
const project = path.join(tmp, "project")
fs.mkdirSync(project)
fs.writeFileSync(path.join(project, "package.json"), JSON.stringify({ name: "fresh-project", private: true, type: "module" }, null, 2))
const npmInstall = (args) => run(project, "npm", ["install", "--no-audit", "--no-fund", "--loglevel=error", ...args])
// Runtime packages with --engine-strict: their whole tree must allow the Node that runs this script.
npmInstall([
  "--engine-strict",
  tarball["@cqbus/core"],
  tarball["@cqbus/rpc"],
  tarball["@cqbus/nats"],
  `effect@${pinned("effect")}`,
  `@bufbuild/protobuf@${pinned("@bufbuild/protobuf")}`
])
log("installed the runtime packages with --engine-strict")
npmInstall([
  "--save-dev",
  tarball["protoc-gen-cqbus"],
  `@bufbuild/buf@${pinned("@bufbuild/buf")}`,
  `@bufbuild/protoc-gen-es@${pinned("@bufbuild/protoc-gen-es")}`,
  `typescript@${pinned("typescript")}`
])
log(`installed the tarballs into ${project} (node ${process.version}, --engine-strict)`)
// The built dist/ of each runtime package loads in plain Node, outside the workspace (no @cqbus/source condition,
// dependencies from the registry): every relative import of the emitted modules resolves.
const imported = run(project, process.execPath, ["--input-type=module", "-e", `
  for (const name of ["@cqbus/core", "@cqbus/rpc", "@cqbus/nats"]) {
    console.log(name + ": " + Object.keys(await import(name)).length + " exports")
  }
`]).trim()
log(`imported from the installed tarballs: ${imported.split("\n").join(", ")}`)

const write = (file, content) => {
  fs.mkdirSync(path.dirname(path.join(project, file)), { recursive: true })
  fs.writeFileSync(path.join(project, file), content)
}
write(
  "proto/shop/events/v1/orders.proto",
  `syntax = "proto3";

package shop.events.v1;

import "cqbus/v1/options.proto";

// OrderPlaced is published when a customer places an order; its topic is derived.
message OrderPlaced {
  option (cqbus.v1.event) = {key_field: "order_id"};

  string order_id = 1;
  string total = 2;
}

// OrderShipped keeps the subject of an older contract.
message OrderShipped {
  option (cqbus.v1.event) = {
    key_field: "order_id"
    topic: "legacy.shipments.order_shipped"
  };

  string order_id = 1;
  string carrier = 2;
}
`
)
write("buf.yaml", block("buf.yaml"))

/** The program: subscribes both events, publishes one of each, prints `topic key=… field=…` per delivery. */
const program = (extension) => `import { EventBus } from "@cqbus/core"
import { Effect } from "effect"
import { OrderPlacedEvent, OrderShippedEvent } from "./gen/shop/events/v1/orders_events${extension}"

const program = Effect.gen(function*() {
  const bus = yield* EventBus.EventBus
  const seen: Array<string> = []
  yield* bus.subscribe(OrderPlacedEvent, (event, delivery) =>
    Effect.sync(() => seen.push(\`\${delivery.topic} key=\${delivery.key} total=\${event.total}\`)))
  yield* bus.subscribe(OrderShippedEvent, (event, delivery) =>
    Effect.sync(() => seen.push(\`\${delivery.topic} key=\${delivery.key} carrier=\${event.carrier}\`)))
  yield* bus.publish(OrderPlacedEvent, { orderId: "order-1", total: "9.99" })
  yield* bus.publish(OrderShippedEvent, { orderId: "order-1", carrier: "DHL" })
  for (let i = 0; i < 500 && seen.length < 2; i++) yield* Effect.sleep("10 millis")
  for (const line of seen.sort()) console.log(line)
})

Effect.runPromise(program.pipe(Effect.scoped, Effect.provide(EventBus.layerMemory())))
`
const expected = [
  "legacy.shipments.order_shipped key=order-1 carrier=DHL",
  "shop.events.v1.order_placed key=order-1 total=9.99"
].join("\n")

const tsconfig = JSON.parse(block("tsconfig.json"))
const variants = [
  {
    name: "target=ts, import_extension=ts",
    bufGen: block("buf.gen.yaml"),
    extension: ".ts",
    generated: ["shop/events/v1/orders_pb.ts", "shop/events/v1/orders_events.ts", "cqbus/v1/options_pb.ts"],
    tsconfigs: { "tsconfig.json": block("tsconfig.json"), "tsconfig.noemit.json": block("tsconfig.noemit.json") }
  },
  {
    name: "target=ts, import_extension=js",
    bufGen: block("buf.gen.yaml import_extension=js"),
    extension: ".js",
    generated: ["shop/events/v1/orders_pb.ts", "shop/events/v1/orders_events.ts", "cqbus/v1/options_pb.ts"],
    tsconfigs: { "tsconfig.json": block("tsconfig.json") }
  },
  {
    name: "target=js+dts",
    bufGen: block("buf.gen.yaml target=js+dts"),
    extension: ".js",
    generated: ["shop/events/v1/orders_pb.js", "shop/events/v1/orders_pb.d.ts", "shop/events/v1/orders_events.js",
      "shop/events/v1/orders_events.d.ts"],
    // As docs/codegen.md says: the first tsconfig.json plus "allowJs": true.
    tsconfigs: {
      "tsconfig.json": JSON.stringify({ ...tsconfig, compilerOptions: { ...tsconfig.compilerOptions, allowJs: true } }, null, 2)
    }
  }
]

for (const variant of variants) {
  for (const stale of ["src", "dist", "tsconfig.json", "tsconfig.noemit.json"]) {
    fs.rmSync(path.join(project, stale), { recursive: true, force: true })
  }
  write("buf.gen.yaml", variant.bufGen)
  write("src/main.ts", program(variant.extension))
  run(project, path.join(project, "node_modules/.bin/buf"), ["generate"])
  log(`${variant.name}: generated`)
  for (const file of variant.generated) {
    if (!fs.existsSync(path.join(project, "src/gen", file))) fail(`${variant.name}: buf generate wrote no src/gen/${file}`)
  }
  for (const [file, content] of Object.entries(variant.tsconfigs)) {
    write(file, content)
    run(project, path.join(project, "node_modules/.bin/tsc"), ["-p", file])
  }
  const output = run(project, process.execPath, ["dist/main.js"]).trim()
  if (output !== expected) fail(`${variant.name}: the program printed\n${output}\ninstead of\n${expected}`)
  log(`${variant.name}: generated, type-checked (${Object.keys(variant.tsconfigs).join(", ")}), ran:`)
  console.log(output.replace(/^/gm, "    "))
}

if (keep) log(`kept ${tmp}`)
else fs.rmSync(tmp, { recursive: true, force: true })
console.log(`check-fresh-project: OK (${variants.length} variants, ${((Date.now() - started) / 1000).toFixed(1)}s)`)
