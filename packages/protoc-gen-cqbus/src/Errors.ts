/**
 * The typed errors of `protoc-gen-cqbus`. The plugin turns an `OptionError` into the `CodeGeneratorResponse`'s
 * `error`, which buf and protoc print before failing, so its message is the whole diagnostic.
 *
 * @module
 */
import { TaggedErrorBase } from "@cqbus/core/backend"

/**
 * An option that cannot be honoured, or two events that share a topic. Generation fails with its message, which
 * names the file, the message and the field or option.
 *
 * @since 0.1.0
 * @category errors
 */
export class OptionError extends TaggedErrorBase<{ readonly message: string }> {
  readonly _tag = "OptionError"
}
