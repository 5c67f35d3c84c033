// Helpers for the protoc-gen-cqbus tests: temporary proto inputs (with cqbus/v1/options.proto beside them), running
// the real buf with the real plugin executable, building a CodeGeneratorRequest for running the plugin in process,
// and reading a generated tree. Not a test file itself (no `.test.ts`).
import { create, fromBinary } from "@bufbuild/protobuf"
import {
  type CodeGeneratorRequest,
  CodeGeneratorRequestSchema,
  FileDescriptorSetSchema
} from "@bufbuild/protobuf/wkt"
import { spawnSync } from "node:child_process"
import fs from "node:fs"
import os from "node:os"
import path from "node:path"
import { fileURLToPath } from "node:url"

export const ROOT: string = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..")
export const FIXTURES: string = path.join(ROOT, "packages/protoc-gen-cqbus/test/fixtures")
export const GOLDEN: string = path.join(ROOT, "packages/protoc-gen-cqbus/test/golden")
const BUF = path.join(ROOT, "node_modules/.bin/buf")
/** The package's proto root (shipped in its tarball): `cqbus/v1/options.proto` lives here, and nowhere else. */
export const OPTIONS_PROTO_ROOT: string = path.join(ROOT, "packages/protoc-gen-cqbus/proto")

/** The options every test generates with: the ones buf.gen.yaml passes. */
export const PARAMETER = "target=ts,import_extension=ts"

/** The plugin entries of buf.gen.yaml, with `out` replaced: protoc-gen-es, then protoc-gen-cqbus from source. */
export const template = (out: string): string =>
  JSON.stringify({
    version: "v2",
    clean: true,
    plugins: [
      { local: path.join(ROOT, "node_modules/.bin/protoc-gen-es"), out, opt: ["target=ts", "import_extension=ts"] },
      {
        local: ["node", "--conditions=@cqbus/source", "--import=tsx", path.join(ROOT, "packages/protoc-gen-cqbus/bin/protoc-gen-cqbus.js")],
        out,
        opt: ["target=ts", "import_extension=ts"]
      }
    ]
  })

export interface Run {
  readonly status: number | null
  readonly stdout: string
  readonly stderr: string
}

/** Runs buf from the repository root (where buf.yaml, buf.gen.yaml and node_modules/.bin/tsx are). */
export const buf = (...args: ReadonlyArray<string>): Run => {
  const result = spawnSync(BUF, args, { cwd: ROOT, encoding: "utf8", timeout: 120_000 })
  if (result.error !== undefined) throw result.error
  return { status: result.status, stdout: result.stdout, stderr: result.stderr }
}

/** A fresh temporary directory, removed by `cleanup`. */
export const tempDir = (name: string): string => fs.mkdtempSync(path.join(os.tmpdir(), `cqbus-gen-${name}-`))

export const cleanup = (dir: string): void => fs.rmSync(dir, { recursive: true, force: true })

/** A proto input directory: the package's own `cqbus/v1/options.proto`, plus the given files (path → content). */
export const protoInput = (files: Readonly<Record<string, string>>, from?: string): string => {
  const dir = tempDir("in")
  fs.mkdirSync(path.join(dir, "cqbus/v1"), { recursive: true })
  fs.copyFileSync(path.join(OPTIONS_PROTO_ROOT, "cqbus/v1/options.proto"), path.join(dir, "cqbus/v1/options.proto"))
  if (from !== undefined) fs.cpSync(from, dir, { recursive: true })
  for (const [name, content] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true })
    fs.writeFileSync(path.join(dir, name), content)
  }
  return dir
}

/** The CodeGeneratorRequest buf would send for `generate` files of an input directory (built with `buf build`). */
export const requestFor = (input: string, generate: ReadonlyArray<string>): CodeGeneratorRequest => {
  const image = path.join(input, "image.binpb")
  const built = buf("build", input, "--as-file-descriptor-set", "-o", image)
  if (built.status !== 0) throw new Error(`buf build failed: ${built.stderr}`)
  const set = fromBinary(FileDescriptorSetSchema, fs.readFileSync(image))
  return create(CodeGeneratorRequestSchema, { fileToGenerate: [...generate], parameter: PARAMETER, protoFile: set.file })
}

/** Every file under `dir`, by path relative to it (forward slashes), with its content. */
export const readTree = (dir: string): Map<string, string> => {
  const out = new Map<string, string>()
  const walk = (at: string) => {
    for (const entry of fs.readdirSync(at, { withFileTypes: true })) {
      const full = path.join(at, entry.name)
      if (entry.isDirectory()) walk(full)
      else out.set(path.relative(dir, full).split(path.sep).join("/"), fs.readFileSync(full, "utf8"))
    }
  }
  if (fs.existsSync(dir)) walk(dir)
  return new Map([...out.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
}
