/**
 * Reading and checking the `cqbus.v1` custom options (`proto/cqbus/v1/options.proto` of this package, shipped in its
 * npm tarball) of the files in a generation request, and deciding which messages are events, on which topic and with
 * which ordering key.
 *
 * The option extensions are looked up in the request itself (a file that uses them imports
 * `cqbus/v1/options.proto`, so its descriptor is there), which keeps the plugin free of generated code that could drift
 * from the `.proto`.
 *
 * @module
 */
import {
  type DescExtension,
  type DescFile,
  type DescMessage,
  getOption,
  hasOption,
  ScalarType
} from "@bufbuild/protobuf"
import { FeatureSet_FieldPresence } from "@bufbuild/protobuf/wkt"
import { isValidTopic, topicOf } from "@cqbus/core"
import { checkTopic } from "@cqbus/core/backend"
import { OptionError } from "../Errors.ts"

/**
 * The path of the options file, as `.proto` files import it.
 */
export const OPTIONS_FILE = "cqbus/v1/options.proto"

/**
 * The `cqbus.v1` extensions found in a request (absent when no file imports them).
 */
export interface Extensions {
  readonly event: DescExtension | undefined
  readonly file: DescExtension | undefined
}

/**
 * Finds the `cqbus.v1` extensions among all files of a request.
 */
export const findExtensions = (allFiles: ReadonlyArray<DescFile>): Extensions => {
  const file = allFiles.find((f) => f.proto.name === OPTIONS_FILE)
  return {
    event: file?.extensions.find((e) => e.typeName === "cqbus.v1.event"),
    file: file?.extensions.find((e) => e.typeName === "cqbus.v1.file")
  }
}

interface EventOptionValue {
  readonly topic: string
  readonly keyField: string
  readonly skip: boolean
}

interface FileOptionValue {
  readonly topicPrefix: string
}

/**
 * An event message as the generator emits it.
 */
export interface EventInfo {
  readonly message: DescMessage
  readonly topic: string
  /** The ordering key field, when the event has one. */
  readonly key: { readonly protoName: string; readonly localName: string } | undefined
  /** Where the topic comes from, for the generated doc comment. */
  readonly topicFrom: "derived" | "prefix" | "option"
}

// `getOption` is typed for generated extensions; these are found at run time, so their value is read structurally.
const read = <A>(desc: DescMessage | DescFile, ext: DescExtension | undefined): A | undefined =>
  ext !== undefined && hasOption(desc as never, ext as never)
    ? (getOption(desc as never, ext as never) as A)
    : undefined

const where = (message: DescMessage) => `${message.file.proto.name}: message ${message.typeName}`

const describeField = (field: DescMessage["fields"][number]): string => {
  switch (field.fieldKind) {
    case "scalar":
      return `a ${ScalarType[field.scalar].toLowerCase()} field`
    case "enum":
      return `an enum field (${field.enum.typeName})`
    case "message":
      return `a message field (${field.message.typeName})`
    case "list":
      return "a repeated field"
    case "map":
      return "a map field"
  }
}

const keyOf = (message: DescMessage, keyField: string): EventInfo["key"] => {
  if (keyField === "") return undefined
  const at = `${where(message)}: option (cqbus.v1.event).key_field ${JSON.stringify(keyField)}`
  const field = message.fields.find((f) => f.name === keyField)
  const strings = message.fields
    .filter((f) => f.fieldKind === "scalar" && f.scalar === ScalarType.STRING)
    .map((f) => f.name)
  if (field === undefined) {
    const hint = strings.length === 0 ? "it has no string fields" : `its string fields are ${strings.join(", ")}`
    throw new OptionError({ message: `${at}: the message has no field ${JSON.stringify(keyField)} (${hint})` })
  }
  if (field.fieldKind !== "scalar" || field.scalar !== ScalarType.STRING) {
    throw new OptionError({ message: `${at}: field ${field.name} is ${describeField(field)}, not a string` })
  }
  if (field.oneof !== undefined) {
    throw new OptionError({ message: `${at}: field ${field.name} is in oneof ${field.oneof.name}; a key must always be set` })
  }
  if (field.presence === FeatureSet_FieldPresence.EXPLICIT) {
    throw new OptionError({ message: `${at}: field ${field.name} is optional (explicit presence); a key must always be set` })
  }
  return { protoName: field.name, localName: field.localName }
}

/**
 * The events of one file, in declaration order (nested messages after their parent): every top-level message whose
 * derived topic follows the `<domain>.events.v<N>.<event_type>` convention, and every message with
 * `option (cqbus.v1.event)`, unless it sets `skip`. Throws `OptionError` for an option that cannot be honoured.
 */
export const eventsOf = (
  file: DescFile,
  types: Iterable<unknown>,
  extensions: Extensions
): ReadonlyArray<EventInfo> => {
  const fileOption = read<FileOptionValue>(file, extensions.file)
  const prefix = fileOption?.topicPrefix ?? ""
  if (prefix !== "") {
    const invalid = checkTopic(prefix, "subject")
    if (invalid !== undefined) {
      throw new OptionError({ message: `${file.proto.name}: option (cqbus.v1.file).topic_prefix: ${invalid.message}` })
    }
  }
  const events: Array<EventInfo> = []
  for (const type of types) {
    const message = type as DescMessage
    if (message.kind !== "message" || message.proto.options?.mapEntry === true) continue
    const option = read<EventOptionValue>(message, extensions.event)
    const topLevel = message.parent === undefined
    if (option?.skip === true) continue
    const derived = topicOf(message)
    if (option === undefined && !(topLevel && isValidTopic(derived))) continue
    const pkg = file.proto.package
    const topicFrom: EventInfo["topicFrom"] = option !== undefined && option.topic !== ""
      ? "option"
      : prefix !== ""
      ? "prefix"
      : "derived"
    const topic = topicFrom === "option"
      ? option!.topic
      : topicFrom === "prefix"
      ? `${prefix}.${pkg === "" ? derived : derived.slice(pkg.length + 1)}`
      : derived
    const invalid = checkTopic(topic, "subject")
    if (invalid !== undefined) {
      const source = topicFrom === "option" ? "option (cqbus.v1.event).topic" : "topic"
      throw new OptionError({ message: `${where(message)}: ${source}: ${invalid.message}` })
    }
    events.push({ message, topic, key: keyOf(message, option?.keyField ?? ""), topicFrom })
  }
  return events
}
