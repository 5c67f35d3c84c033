/**
 * The code the plugin writes: `<file>_events.ts` with a topic constant and an `EventDef` per event and a tuple of the
 * file's events, and `<file>_rpc.ts` with a `ServiceDef`, its subjects, a client factory and a `serve` function per
 * service. Everything it emits only binds names and types to `@cqbus/core` (`defineEvent`) and `@cqbus/rpc`
 * (`defineService`, `makeRpcClient`, `serveRpc`), so behaviour lives in the libraries, not in generated code, and
 * every export has an explicit type (the output passes `isolatedDeclarations` and `deno publish`).
 *
 * @module
 */
import type { DescFile, DescMessage, DescMethod, DescService } from "@bufbuild/protobuf"
import { type GeneratedFile, getComments, type Printable, type Schema } from "@bufbuild/protoplugin"
import { methodSubject } from "@cqbus/rpc"
import { OptionError } from "../Errors.ts"
import { type EventInfo, eventsOf, type Extensions, findExtensions } from "./options.ts"

/** The proto comments of a descriptor as JSDoc text (one leading space per line dropped, as protoc-gen-es does). */
const commentText = (desc: DescMessage | DescService | DescMethod): string => {
  const leading = getComments(desc).leading
  if (leading === undefined) return ""
  return leading
    .replace(/\n$/, "")
    .split("\n")
    .map((line) => (line.startsWith(" ") ? line.slice(1) : line))
    .join("\n")
}

const paragraphs = (...parts: ReadonlyArray<string>): string => parts.filter((p) => p.length > 0).join("\n\n")

/** `cqc/events/v1/price` → `file_cqc_events_v1_price`, the name protoc-gen-es gives the file descriptor. */
const fileIdent = (file: DescFile): string => `file_${file.name.replace(/[^a-zA-Z0-9_]/g, "_")}`

const keyText = (event: EventInfo): string =>
  event.key === undefined ? "No ordering key." : `Ordering key: \`${event.key.protoName}\`.`

const topicText = (event: EventInfo): string => {
  switch (event.topicFrom) {
    case "derived":
      return `Topic \`${event.topic}\` (package + snake_case name).`
    case "prefix":
      return `Topic \`${event.topic}\` (from option (cqbus.v1.file).topic_prefix).`
    case "option":
      return `Topic \`${event.topic}\` (from option (cqbus.v1.event).topic).`
  }
}

const emitEvents = (f: GeneratedFile, file: DescFile, events: ReadonlyArray<EventInfo>): void => {
  f.preamble(file)
  const defineEvent = f.import("defineEvent", "@cqbus/core")
  const EventDef = f.import("EventDef", "@cqbus/core", true)
  const names: Array<{ readonly event: string; readonly schema: ReturnType<GeneratedFile["importSchema"]> }> = []
  for (const event of events) {
    const schema = f.importSchema(event.message)
    const base = schema.name.replace(/Schema$/, "")
    const topicName = `${base}Topic`
    const eventName = `${base}Event`
    const generatedFrom = `@generated from message ${event.message.typeName}`
    const deprecated = event.message.deprecated ? "\n@deprecated" : ""
    f.print(f.jsDoc(`The topic (NATS subject) of ${event.message.typeName}.\n\n${generatedFrom}`))
    f.print(f.export("const", topicName), " = ", f.string(event.topic), ";")
    f.print()
    const facts = `${topicText(event)} ${keyText(event)}`
    f.print(f.jsDoc(paragraphs(commentText(event.message), facts, generatedFrom + deprecated)))
    const key = event.key === undefined ? "" : `, key: ${JSON.stringify(event.key.localName)}`
    f.print(
      f.export("const", eventName), ": ", EventDef, "<typeof ", schema, "> = ",
      defineEvent, "(", schema, ", { topic: ", topicName, key, " });"
    )
    f.print()
    names.push({ event: eventName, schema })
  }
  f.print(f.jsDoc(`Every event of ${file.proto.name}, in declaration order.`))
  const type: Array<Printable> = []
  names.forEach(({ schema }, i) => type.push(...(i === 0 ? [] : [", "]), EventDef, "<typeof ", schema, ">"))
  f.print(
    f.export("const", `${fileIdent(file)}_events`), ": readonly [", ...type, "] = [",
    names.map((n) => n.event).join(", "), "];"
  )
}

/** A versioned package (`cqc.control.v1`): request-reply is generated only for services whose contract is versioned. */
const VERSIONED = /(?:^|\.)v[1-9][0-9]*$/

const unaryMethods = (service: DescService): ReadonlyArray<DescMethod> =>
  service.methods.filter((m) => m.methodKind === "unary")

const emitServices = (f: GeneratedFile, file: DescFile, services: ReadonlyArray<DescService>): void => {
  f.preamble(file)
  const rpc = (name: string, typeOnly = false) => f.import(name, "@cqbus/rpc", typeOnly)
  const effect = (name: string) => f.import(name, "effect", true)
  for (const service of services) {
    const desc = f.importSchema(service)
    const base = desc.name
    const methods = unaryMethods(service)
    const skipped = service.methods.filter((m) => m.methodKind !== "unary")
    const generatedFrom = `@generated from service ${service.typeName}`
    const subjects = methods.map((m) => `- \`${m.localName}\`: \`${methodSubject(m)}\``).join("\n")
    const skippedText = skipped.length === 0
      ? ""
      : `Not generated (streaming, not request-reply): ${skipped.map((m) => m.name).join(", ")}.`

    f.print(f.jsDoc(paragraphs(
      commentText(service),
      `Request-reply over core NATS subjects (package, snake_case service, snake_case method):\n${subjects}`,
      skippedText,
      generatedFrom
    )))
    f.print(
      f.export("const", `${base}Rpc`), ": ", rpc("ServiceDef", true), "<typeof ", desc, "> = ",
      rpc("defineService"), "(", desc, ");"
    )
    f.print()

    f.print(f.jsDoc(`The subject of each unary method of ${service.typeName}, by method.\n\n${generatedFrom}`))
    f.print(f.export("const", `${base}Subjects`), ": {")
    for (const m of methods) f.print("  readonly ", m.localName, ": ", f.string(methodSubject(m)), ";")
    f.print("} = {")
    for (const m of methods) f.print("  ", m.localName, ": ", f.string(methodSubject(m)), ",")
    f.print("};")
    f.print()

    const methodDocs = methods.map((m) => {
      const text = commentText(m).replace(/\n/g, " ")
      return `- \`${m.localName}\`${text === "" ? "" : `: ${text}`}`
    }).join("\n")
    const clientDoc = `A typed client of ${service.typeName}: one function per unary method.`
    f.print(f.jsDoc(paragraphs(clientDoc, methodDocs, generatedFrom)))
    f.print(f.export("type", `${base}Client`), " = ", rpc("RpcClient", true), "<typeof ", desc, ">;")
    f.print()
    f.print(f.jsDoc(
      `Creates a client of ${service.typeName} over the RequestReply in context (\`NatsRequestReply.layer\` from\n` +
        `@cqbus/nats, or \`MemoryRequestReply.layer()\` from @cqbus/rpc). Calls fail with NoResponders,\n` +
        `RequestTimeout, RpcError (the server's error answer) or RequestFailed.\n\n${generatedFrom}`
    ))
    f.print(
      f.export("const", `make${base}Client`), " = (options?: ", rpc("RpcClientOptions", true), "): ",
      effect("Effect"), ".Effect<", `${base}Client`, ", never, ", rpc("RequestReply", true), ".RequestReply> =>"
    )
    f.print("  ", rpc("makeRpcClient"), "(", `${base}Rpc`, ", options);")
    f.print()
    f.print(f.jsDoc(
      `The handlers of ${service.typeName}: one per unary method, answering the response or failing with an\n` +
        `RpcError.\n\n${generatedFrom}`
    ))
    f.print(f.export("type", `${base}Handlers`), "<R = never> = ", rpc("RpcHandlers", true), "<typeof ", desc, ", R>;")
    f.print()
    f.print(f.jsDoc(
      `Serves ${service.typeName} over the RequestReply in context until the scope closes. Servers share requests\n` +
        `through their queue group (default: ${JSON.stringify(service.typeName)}).\n\n${generatedFrom}`
    ))
    f.print(
      f.export("const", `serve${base}`), " = <R = never>(handlers: ", `${base}Handlers`, "<R>, options?: ",
      rpc("RpcServeOptions", true), "): ", effect("Effect"), ".Effect<void, ", rpc("ServeError", true), ", ",
      effect("Scope"), ".Scope | R | ", rpc("RequestReply", true), ".RequestReply> =>"
    )
    f.print("  ", rpc("serveRpc"), "(", `${base}Rpc`, ", handlers, options);")
    f.print()
  }
}

/**
 * Generates the TypeScript for every file of a request. Throws `OptionError` (which the plugin reports as the
 * request's error) when an option cannot be honoured or two events share a topic.
 */
export const generateTs = (schema: Schema): void => {
  const extensions: Extensions = findExtensions(schema.allFiles)
  const topics = new Map<string, string>()
  for (const file of schema.files) {
    const events = eventsOf(file, schema.typesInFile(file), extensions)
    for (const event of events) {
      const other = topics.get(event.topic)
      if (other !== undefined) {
        const where = `${event.message.file.proto.name}: message ${event.message.typeName}`
        throw new OptionError({ message: `${where}: topic ${event.topic} is already the topic of ${other}` })
      }
      topics.set(event.topic, event.message.typeName)
    }
    if (events.length > 0) emitEvents(schema.generateFile(`${file.name}_events.ts`), file, events)
    const services = VERSIONED.test(file.proto.package)
      ? file.services.filter((s) => unaryMethods(s).length > 0)
      : []
    if (services.length > 0) emitServices(schema.generateFile(`${file.name}_rpc.ts`), file, services)
  }
}
