#!/usr/bin/env bash
# Checks that every published package is publishable: it builds (tsc → dist/ with declarations), `publint` finds
# nothing wrong with its package.json and files for npm, and `deno publish --dry-run` accepts it for JSR (no slow
# types, every import resolvable).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
for dir in packages/*/; do
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
