/**
 * An `EventDef` ties a protobuf message to its topic and, optionally, to the field that orders it. It is the one value
 * publish and subscribe need, so no code outside `defineEvent` types a topic string.
 *
 * @module
 */
import { type DescMessage, type MessageShape, ScalarType } from "@bufbuild/protobuf"
import * as Options from "./Options.ts"
import { checkTopic, topicOf } from "./Topic.ts"

/**
 * A typed event: its protobuf schema, the topic it travels on and how to find its ordering key.
 *
 * @since 0.1.0
 * @category models
 */
export interface EventDef<S extends DescMessage = DescMessage> {
  /** The protobuf message schema (`AssetCreatedSchema`). */
  readonly schema: S
  /** The protobuf full name, sent as the CloudEvents `type` (`"cqc.events.v1.AssetCreated"`). */
  readonly type: string
  /** The concrete topic the event is published on. */
  readonly topic: string
  /** The ordering key (aggregate id) of an event, when the event has one. */
  readonly key: ((event: MessageShape<S>) => string) | undefined
  /** The message field the key is read from, when it is one (for error messages). */
  readonly keyField?: string
  /** Publish an event whose key is empty without a key instead of failing `MissingKey` (default `false`). */
  readonly allowEmptyKey?: boolean
}

/**
 * The names of the string fields of a message: candidates for an ordering key.
 *
 * @since 0.1.0
 * @category models
 */
export type StringFieldOf<S extends DescMessage> = {
  [K in keyof MessageShape<S>]: MessageShape<S>[K] extends string ? K : never
}[keyof MessageShape<S>] & string

/**
 * Options of `defineEvent`.
 *
 * @since 0.1.0
 * @category models
 */
export interface DefineEventOptions<S extends DescMessage> {
  /** Override the topic (default: `topicOf(schema)`). Must be a concrete, valid topic. */
  readonly topic?: string
  /**
   * The ordering key: a string field of the message (`"assetId"`) or a function of the event. With
   * `ordering: "key"`, events with the same key are handled one at a time, in order.
   */
  readonly key?: StringFieldOf<S> | ((event: MessageShape<S>) => string)
  /**
   * An empty key (proto3's default for an unset string field) fails the publish with `PublishError` reason
   * `MissingKey`, because every such event would share one key `""`. `true` publishes it without a key instead
   * (no ordering promise for it). Default `false`.
   */
  readonly allowEmptyKey?: boolean
}

/**
 * A key option names a string field of the message or is a function: a key naming anything else would read
 * `undefined` and put every event under the one key "undefined".
 */
const checkKey = (schema: DescMessage, key: unknown): Options.Check => {
  if (key === undefined || typeof key === "function") return undefined
  const fields = schema.fields.filter((f) => f.fieldKind === "scalar" && f.scalar === ScalarType.STRING).map((f) => f.localName)
  return typeof key === "string" && fields.includes(key) ? undefined : {
    option: "key",
    message: `key must be a string field of ${schema.typeName} (${fields.join(", ") || "it has none"}) or a function, got ${
      Options.show(key)
    }`
  }
}

/**
 * Defines a typed event. The topic defaults to the message's package and snake_case name
 * (`cqc.events.v1.asset_created`). An invalid topic override is a programming error and throws `InvalidTopic` here,
 * at definition time, instead of failing every publish later; a `key` naming no string field of the message throws a
 * `ConfigError` the same way.
 *
 * @example
 * ```ts
 * import { defineEvent } from "@cqbus/core"
 * import { AssetCreatedSchema } from "@cqbus/testkit/events"
 * export const AssetCreated = defineEvent(AssetCreatedSchema, { key: "assetId" })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const defineEvent = <S extends DescMessage>(schema: S, options: DefineEventOptions<S> = {}): EventDef<S> => {
  const topic = options.topic ?? topicOf(schema)
  const invalid = checkTopic(topic, "subject")
  if (invalid !== undefined) throw invalid
  const key = options.key
  Options.orThrow(Options.first(() => checkKey(schema, key), () => Options.boolean("allowEmptyKey", options.allowEmptyKey)))
  return {
    schema,
    type: schema.typeName,
    topic,
    ...(typeof key === "string" ? { keyField: key } : {}),
    ...(options.allowEmptyKey === true ? { allowEmptyKey: true } : {}),
    key: key === undefined
      ? undefined
      : typeof key === "function"
      ? key
      : (event: MessageShape<S>) => String((event as Record<string, unknown>)[key])
  }
}
