#!/usr/bin/env bash
# Checks that every published package is publishable: it builds (tsc → dist/ with declarations), `publint` finds
# nothing wrong with its package.json and files for npm, and `deno publish --dry-run` accepts it for JSR (no slow
# types, every import resolvable).
#
# First, the dependency rule (issue 10): an application must hold ONE copy of @cqbus/core, or its `instanceof` checks
# and service identities split. So every package an application imports at run time declares @cqbus/core (and any
# other @cqbus/* package) as a peerDependency with a caret range, plus a devDependency for the workspace, and never
# as a regular dependency. The codegen CLI protoc-gen-cqbus is exempt: it runs at build time, in its own process.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

echo "---- @cqbus/* dependency rule"
node --input-type=module - <<'JS'
import { readdirSync, readFileSync, existsSync } from "node:fs"
const exempt = new Set(["@cqbus/core", "protoc-gen-cqbus"])
const problems = []
for (const dir of readdirSync("packages")) {
  const file = `packages/${dir}/package.json`
  if (!existsSync(file)) continue
  const pkg = JSON.parse(readFileSync(file, "utf8"))
  if (exempt.has(pkg.name)) continue
  const deps = pkg.dependencies ?? {}, peers = pkg.peerDependencies ?? {}, dev = pkg.devDependencies ?? {}
  for (const name of Object.keys(deps).filter((n) => n.startsWith("@cqbus/"))) {
    problems.push(`${file}: ${name} is in dependencies; make it a peerDependency ("^x.y.z") and a devDependency`)
  }
  for (const name of new Set(["@cqbus/core", ...Object.keys(peers).filter((n) => n.startsWith("@cqbus/"))])) {
    if (!/^\^\d+\.\d+\.\d+$/.test(peers[name] ?? "")) {
      problems.push(`${file}: peerDependencies["${name}"] is ${JSON.stringify(peers[name])}, expected a caret range such as "^0.1.0"`)
    }
    if (dev[name] === undefined) problems.push(`${file}: ${name} is missing from devDependencies (the workspace link)`)
  }
}
if (problems.length > 0) {
  console.error(`check-packages: FAILED: @cqbus/* must be a peer dependency of every runtime package:\n  ${problems.join("\n  ")}`)
  process.exit(1)
}
console.log("@cqbus/* dependency rule ok: @cqbus/core is a caret-range peer of every runtime package")
JS
# In the root package.json's workspace order (dependency order): a package's declarations build against the dist/ of
# the @cqbus/* packages it imports (@cqbus/nats against @cqbus/rpc's), so those are built first.
for dir in $(node -p "require('./package.json').workspaces.join(' ')"); do
  [[ -f "$dir/package.json" && -f "$dir/deno.json" ]] || continue
  name=$(node -p "require('./$dir/package.json').name")
  echo "---- $name"
  (cd "$dir" && npm run --silent build && "$root/node_modules/.bin/publint" --strict)
  (cd "$dir" && "$root/node_modules/.bin/deno" publish --dry-run --allow-dirty --quiet)
  echo "$name: build, publint and deno publish --dry-run ok"
done
# npm-only packages (no JSR release): protoc-gen-cqbus is a Node executable that buf and protoc run, see its README.
for dir in packages/protoc-gen-cqbus/; do
  name=$(node -p "require('./$dir/package.json').name")
  echo "---- $name (npm only)"
  (cd "$dir" && npm run --silent build && "$root/node_modules/.bin/publint" --strict)
  echo "$name: build and publint ok"
done
