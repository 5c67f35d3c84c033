#!/usr/bin/env bash
# Checks that every published package is publishable, in the root package.json's workspace order (dependency order:
# a package's declarations are checked against its dependencies' built ones). For each package:
#   - it builds (`npm run build`: tsup with the root tsup.config.ts, dist/ with declarations and maps);
#   - every entry of its package.json `exports` imports in Node from dist/ (no @cqbus/source condition);
#   - the tarball `npm pack` makes (packed once, without running the build again) passes `publint --strict` and
#     `attw --profile esm-only`: the packages are ESM only (DESIGN §6), so the two resolutions that cannot load ESM
#     by design, `node10` (no `exports` support) and `node16-cjs` (`require` of an ESM file), are not checked;
#   - JSR packages (those with a deno.json) pass `deno publish --dry-run`: no slow types, every import resolvable.
# A package directory missing from the workspaces fails the check: it would be neither built nor checked.
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
workspaces=$(node -p "require('./package.json').workspaces.join('\n')")
for dir in packages/*/; do
  dir=${dir%/}
  if [[ -f "$dir/package.json" ]] && ! grep -qx "$dir" <<<"$workspaces"; then
    echo "check-packages: FAILED: $dir is not in the root package.json's workspaces" >&2
    exit 1
  fi
done

packs=$(mktemp -d)
trap 'rm -rf "$packs"' EXIT
bin="$root/node_modules/.bin"
total=$SECONDS
for dir in $workspaces; do
  started=$SECONDS
  name=$(node -p "require('./$dir/package.json').name")
  echo "---- $name"
  (cd "$dir" && npm run --silent build -- --silent)
  # Each export by its package name, as a user imports it (Node resolves a package's own name inside it).
  (cd "$dir" && node --input-type=module -e '
    const { name, exports } = JSON.parse(await (await import("node:fs/promises")).readFile("package.json", "utf8"))
    const subpaths = Object.keys(exports).filter((key) => !key.endsWith(".json"))
    for (const subpath of subpaths) await import(name + subpath.slice(1))
    console.log(`imported ${subpaths.map((s) => name + s.slice(1)).join(", ")} from dist/`)
  ')
  tarball=$(cd "$dir" && npm pack --ignore-scripts --pack-destination "$packs" --json --silent | node -p 'JSON.parse(require("fs").readFileSync(0, "utf8"))[0].filename')
  "$bin/publint" run "$packs/$tarball" --strict | grep -v '^Running publint\|^Unpacking\|^Linting'
  if ! attw=$("$bin/attw" "$packs/$tarball" --profile esm-only --format json); then
    "$bin/attw" "$packs/$tarball" --profile esm-only --format table-flipped --no-emoji || true
    echo "check-packages: FAILED: attw found problems in $name (above)" >&2
    exit 1
  fi
  node -p '"attw --profile esm-only: " + Object.keys(JSON.parse(require("fs").readFileSync(0, "utf8")).analysis.entrypoints).join(", ") + " ok"' <<<"$attw"
  if [[ -f "$dir/deno.json" ]]; then
    (cd "$dir" && "$bin/deno" publish --dry-run --allow-dirty --quiet)
    echo "$name: build, import, publint, attw and deno publish --dry-run ok ($((SECONDS - started))s)"
  else
    # npm only (no JSR release): protoc-gen-cqbus is a Node executable that buf and protoc run, see its README.
    echo "$name: build, import, publint and attw ok, npm only ($((SECONDS - started))s)"
  fi
done
echo "check-packages: OK ($(wc -w <<<"$workspaces") packages, $((SECONDS - total))s)"
