// protoc-gen-cqbus end to end: the real buf runs the real plugin executable (beside protoc-gen-es) over a small proto
// set (test/fixtures: convention and option-based events, keyed and unkeyed, topic and prefix overrides, an opt-out, a
// nested message, comments, a service with a streaming method) and the output must equal the committed golden files
// (test/golden, type-checked by the repo's tsc under isolatedDeclarations). `npm run gen` must reproduce the committed
// packages/testkit/src/gen byte for byte, and proto/ must lint clean.
//
// After an intended change of the generator, rewrite the golden files with
//   CQBUS_UPDATE_GOLDEN=1 npm test -- packages/protoc-gen-cqbus/test/generate.test.ts --runtime=node20
// and review the diff.
import { VERSION } from "protoc-gen-cqbus"
import assert from "node:assert/strict"
import fs from "node:fs"
import path from "node:path"
import { test } from "node:test"
import { buf, cleanup, FIXTURES, GOLDEN, protoInput, readTree, ROOT, template, tempDir } from "./support.ts"

const diffSummary = (expected: Map<string, string>, actual: Map<string, string>): string => {
  const lines: Array<string> = []
  for (const name of new Set([...expected.keys(), ...actual.keys()])) {
    const want = expected.get(name)
    const got = actual.get(name)
    if (want === undefined) lines.push(`  unexpected file ${name}`)
    else if (got === undefined) lines.push(`  missing file ${name}`)
    else if (want !== got) {
      const a = want.split("\n")
      const b = got.split("\n")
      const at = a.findIndex((line, i) => line !== b[i])
      lines.push(`  ${name} differs at line ${at + 1}:\n    want: ${a[at]}\n    got:  ${b[at]}`)
    }
  }
  return lines.join("\n")
}

test("protoc-gen-cqbus: buf generate over the fixture protos writes exactly the committed golden files", { timeout: 120_000 }, () => {
  const input = protoInput({}, FIXTURES)
  const out = tempDir("out")
  try {
    const run = buf("generate", input, "--template", template(out))
    assert.equal(run.status, 0, `buf generate failed:\n${run.stderr}`)
    const actual = readTree(out)
    if (process.env["CQBUS_UPDATE_GOLDEN"] === "1") {
      cleanup(GOLDEN)
      fs.cpSync(out, GOLDEN, { recursive: true })
    }
    const expected = readTree(GOLDEN)
    assert.deepEqual([...actual.keys()], [...expected.keys()], "the same files")
    assert.ok(
      [...actual.keys()].some((name) => name.endsWith("_events.ts")) && [...actual.keys()].some((n) => n.endsWith("_rpc.ts")),
      "events and rpc files are among them"
    )
    const differences = diffSummary(expected, actual)
    assert.equal(differences, "", `the output differs from test/golden:\n${differences}`)
  } finally {
    cleanup(input)
    cleanup(out)
  }
})

test("protoc-gen-cqbus: npm run gen (buf.gen.yaml) reproduces the committed packages/testkit/src/gen byte for byte", { timeout: 120_000 }, () => {
  const out = tempDir("gen")
  try {
    // `-o` prefixes every `out` of buf.gen.yaml, so the real generated tree is not touched.
    const run = buf("generate", "-o", out)
    assert.equal(run.status, 0, `buf generate failed:\n${run.stderr}`)
    const generated = readTree(path.join(out, "packages/testkit/src/gen"))
    const committed = readTree(path.join(ROOT, "packages/testkit/src/gen"))
    assert.ok(generated.has("cqc/events/v1/price_events.ts"), "the events of price.proto are generated")
    assert.ok(generated.has("cqc/control/v1/control_rpc.ts"), "the control service is generated")
    assert.deepEqual([...generated.keys()], [...committed.keys()], "the same files (run `npm run gen`)")
    const differences = diffSummary(committed, generated)
    assert.equal(differences, "", `packages/testkit/src/gen is stale; run \`npm run gen\`:\n${differences}`)
  } finally {
    cleanup(out)
  }
})

test("protoc-gen-cqbus: @cqbus/testkit/events and /control re-export every generated file of their packages", async () => {
  const surfaces = [
    { module: "@cqbus/testkit/events", dir: "cqc/events/v1" },
    { module: "@cqbus/testkit/control", dir: "cqc/control/v1" }
  ]
  for (const { dir, module } of surfaces) {
    const surface = (await import(module)) as Record<string, unknown>
    const files = fs.readdirSync(path.join(ROOT, "packages/testkit/src/gen", dir)).filter((f) => f.endsWith(".ts"))
    assert.ok(files.some((f) => f.endsWith("_events.ts") || f.endsWith("_rpc.ts")), `${dir} has generated cqbus code`)
    for (const file of files) {
      const generated = (await import(path.join(ROOT, "packages/testkit/src/gen", dir, file))) as Record<string, unknown>
      for (const [name, value] of Object.entries(generated)) {
        assert.equal(surface[name], value, `${module} re-exports ${name} of ${dir}/${file} (add an export line for new files)`)
      }
    }
  }
})

test("protoc-gen-cqbus: buf lint is clean on proto/", { timeout: 60_000 }, () => {
  const run = buf("lint")
  assert.equal(run.status, 0, `buf lint reported:\n${run.stdout}${run.stderr}`)
})

test("protoc-gen-cqbus: the plugin reports the package version", () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, "packages/protoc-gen-cqbus/package.json"), "utf8")) as {
    readonly version: string
  }
  assert.equal(VERSION, pkg.version)
})
