/**
 * `protoc-gen-cqbus`: a buf/protoc plugin that turns protobuf events and services into typed cqbus code. For every
 * event message it writes a topic constant and an `EventDef` into `<file>_events.ts`; for every service with unary
 * methods in a versioned package it writes a typed request-reply client and server into `<file>_rpc.ts`. It runs
 * beside `protoc-gen-es`, whose `*_pb.ts` output the generated code imports.
 *
 * @module
 */
import { create } from "@bufbuild/protobuf"
import { CodeGeneratorResponseSchema } from "@bufbuild/protobuf/wkt"
import { createEcmaScriptPlugin, type Plugin } from "@bufbuild/protoplugin"
import { generateTs } from "./internal/generate.ts"
import { OptionError } from "./Errors.ts"

export { OptionError } from "./Errors.ts"
export { OPTIONS_FILE } from "./internal/options.ts"

/**
 * The plugin version, written into the preamble of every generated file (the package version).
 *
 * @since 0.1.0
 * @category models
 */
export const VERSION = "0.1.0"

const inner: Plugin = createEcmaScriptPlugin({ name: "protoc-gen-cqbus", version: `v${VERSION}`, generateTs })

/**
 * The plugin. `run` answers a `CodeGeneratorRequest`; an option that cannot be honoured becomes the response's
 * `error` (buf and protoc print it and fail), naming the file, the message and the field.
 *
 * @example
 * ```ts
 * import { runNodeJs } from "@bufbuild/protoplugin"
 * import { plugin } from "protoc-gen-cqbus"
 * runNodeJs(plugin)
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const plugin: Plugin = {
  name: inner.name,
  version: inner.version,
  run: (request) => {
    try {
      return inner.run(request)
    } catch (error) {
      // The protocol's way to reject the input: the compiler reports the message and writes nothing.
      if (error instanceof OptionError) return create(CodeGeneratorResponseSchema, { error: error.message })
      throw error
    }
  }
}
