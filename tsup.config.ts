// The one build of every published package: each package's `build` script runs `tsup --config ../../tsup.config.ts`
// in its own directory. Every `src/**/*.ts` becomes one ESM module in `dist/` at the same relative path (`.js`,
// `.js.map`, `.d.ts`, `.d.ts.map`), so a new module or subpath export needs no build change, only its package.json
// `exports` entry, and a new package only the same `build` script. One output module per source module (nothing of
// the package is bundled into another file) keeps tree-shaking, stack traces and source maps as they were with tsc.
import { readFile } from "node:fs/promises"
import path from "node:path"
import type { Options } from "tsup"
import ts from "typescript"

/**
 * Points relative imports at the emitted `.js`: src writes them with `.ts` (`rewriteRelativeImportExtensions`), and
 * esbuild without bundling copies specifiers as they are. The specifiers are found with TypeScript's parser (imports,
 * re-exports, `import()` and `import x = require()` with a literal), never by searching the text, and replaced in
 * place by one of the same length, so the source map needs no adjustment.
 */
const jsSpecifiers: NonNullable<Options["esbuildPlugins"]>[number] = {
  name: "cqbus:js-specifiers",
  setup(build) {
    build.onLoad({ filter: /\.ts$/ }, async (args) => {
      const text = await readFile(args.path, "utf8")
      const file = ts.createSourceFile(args.path, text, ts.ScriptTarget.Latest, false, ts.ScriptKind.TS)
      const ends: Array<number> = []
      const visit = (node: ts.Node): void => {
        const specifier = ts.isImportDeclaration(node) || ts.isExportDeclaration(node)
          ? node.moduleSpecifier
          : ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword
          ? node.arguments[0]
          : ts.isExternalModuleReference(node)
          ? node.expression
          : undefined
        if (specifier !== undefined && ts.isStringLiteral(specifier) && /^\.\.?\/.*\.ts$/.test(specifier.text)) {
          ends.push(specifier.getEnd() - 1) // the closing quote
        }
        ts.forEachChild(node, visit)
      }
      visit(file)
      let contents = text
      for (const end of ends) contents = `${contents.slice(0, end - 2)}js${contents.slice(end)}`
      return { contents, loader: "ts" }
    })
  }
}

/**
 * The declarations, from TypeScript itself with the package's tsconfig.json: one `.d.ts` and `.d.ts.map` per source
 * module, and a failed build on any type error. Not tsup's `dts` option: its rollup step turns every `export * as X`
 * into a shared hash-named chunk and cannot write declaration maps (it forces `declarationMap: false`), so "go to
 * definition" in a user's editor would stop at a rolled-up file instead of reaching the shipped src/.
 */
const emitDeclarations = async (): Promise<void> => {
  const started = Date.now()
  const configFile = path.resolve("tsconfig.json")
  const parsed = ts.getParsedCommandLineOfConfigFile(
    configFile,
    {
      noEmit: false,
      declaration: true,
      emitDeclarationOnly: true,
      declarationMap: true,
      rootDir: path.resolve("src"),
      outDir: path.resolve("dist"),
      // Checked against the built declarations of sibling packages (what users get), not their sources; so a
      // dependent builds after its dependencies, as the root `npm run build` does (workspace order).
      customConditions: []
    },
    { ...ts.sys, onUnRecoverableConfigFileDiagnostic: (d) => failOn([d]) }
  )
  if (parsed === undefined) throw new Error(`cannot read ${configFile}`)
  const program = ts.createProgram({ rootNames: parsed.fileNames, options: parsed.options })
  let written = 0
  const emitted = program.emit(undefined, (file, text, bom) => {
    ts.sys.writeFile(file, text, bom)
    if (file.endsWith(".d.ts")) written++
  })
  failOn([...ts.getPreEmitDiagnostics(program), ...emitted.diagnostics])
  console.log(`DTS ${written} declaration files (with maps) in ${Date.now() - started}ms`)
}

const failOn = (diagnostics: ReadonlyArray<ts.Diagnostic>): void => {
  if (diagnostics.length === 0) return
  const host: ts.FormatDiagnosticsHost = {
    getCanonicalFileName: (f) => f,
    getCurrentDirectory: ts.sys.getCurrentDirectory,
    getNewLine: () => ts.sys.newLine
  }
  const format = process.stdout.isTTY ? ts.formatDiagnosticsWithColorAndContext : ts.formatDiagnostics
  throw new Error(`declarations not emitted:\n${format(diagnostics, host)}`)
}

const config: Options = {
  entry: ["src/**/*.ts", "!src/**/*.d.ts", "!src/**/*.test.ts"],
  outDir: "dist",
  format: ["esm"],
  target: "es2022",
  // Runtime-agnostic output: no Node shims, and `node:` specifiers kept (Deno and Bun need the prefix).
  platform: "neutral",
  removeNodeProtocol: false,
  shims: false,
  splitting: false,
  treeshake: false,
  sourcemap: true,
  esbuildOptions(options) {
    // The maps point at src/, which every package ships (as tsc's maps did); a copy inside each map would double it.
    options.sourcesContent = false
  },
  clean: true,
  // Each source module is compiled alone to the same path under dist/, its imports left as they are (but `.js`).
  bundle: false,
  esbuildPlugins: [jsSpecifiers],
  onSuccess: emitDeclarations
}

export default config
