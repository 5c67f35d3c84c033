#!/usr/bin/env bash
# Lints proto/ and packages/protoc-gen-cqbus/proto (cqbus's options, shipped
# in that package) and regenerates packages/testkit/src/gen, then fails when
# the result differs from what is committed: the generated code is stale (a
# .proto changed without `npm run gen`, or protoc-gen-cqbus changed without it) or was
# edited by hand. The generated files (*_pb.ts from protoc-gen-es, *_events.ts
# and *_rpc.ts from protoc-gen-cqbus) are committed and never edited; fix a
# failure by running `npm run gen` and committing proto/ together with the
# regenerated files. The plugin's own golden files are checked by
# packages/protoc-gen-cqbus/test/generate.test.ts.
#
# Usage (repo root or anywhere inside the repo, after `npm ci`):
#   scripts/check-gen.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  echo "check-gen: $(pwd) is not a git work tree; cannot compare with the committed code." >&2
  exit 2
fi
# protoc-gen-cqbus runs from its sources through tsx (see buf.gen.yaml).
for bin in buf protoc-gen-es tsx; do
  if [[ ! -x "node_modules/.bin/$bin" ]]; then
    echo "check-gen: node_modules/.bin/$bin is missing; run \`npm ci\` first." >&2
    exit 2
  fi
done

paths=(packages/testkit/src/gen proto packages/protoc-gen-cqbus/proto)

echo "check-gen: buf lint"
npx --no -- buf lint

echo "check-gen: buf generate"
npx --no -- buf generate

changes="$(git status --porcelain --untracked-files=all -- "${paths[@]}")"
if [[ -n "$changes" ]]; then
  {
    echo "check-gen: FAILED: proto/ or packages/testkit/src/gen differs from the committed code."
    echo "  Either a .proto changed without regenerating, or a generated file was edited by hand"
    echo "  (generated *_pb.ts, *_events.ts and *_rpc.ts files are never edited). Run \`npm run gen\` and commit proto/ and"
    echo "  packages/testkit/src/gen together. Changed paths:"
    echo "$changes" | sed 's/^/    /'
    git --no-pager diff --stat -- "${paths[@]}" | sed 's/^/  /'
  } >&2
  exit 1
fi

echo "check-gen: OK (proto/ lints and packages/testkit/src/gen is up to date)"
