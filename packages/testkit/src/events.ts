/**
 * The CQC example events as typed `EventDef`s, next to their generated protobuf code. The conformance suite, the
 * examples and the benchmarks all use them; user code defines its own events the same way (or generates them).
 *
 * @module
 */
import { defineEvent, type EventDef } from "@cqbus/core"
import { AssetCreatedSchema, AssetDeletedSchema } from "./gen/cqc/events/v1/asset_pb.ts"
import { PositionChangedSchema } from "./gen/cqc/events/v1/position_pb.ts"
import { PriceUpdatedSchema } from "./gen/cqc/events/v1/price_pb.ts"

export * from "./gen/cqc/events/v1/asset_pb.ts"
export * from "./gen/cqc/events/v1/position_pb.ts"
export * from "./gen/cqc/events/v1/price_pb.ts"

/**
 * `cqc.events.v1.asset_created`, ordered by `assetId`.
 *
 * @since 0.1.0
 * @category events
 */
export const AssetCreatedEvent: EventDef<typeof AssetCreatedSchema> = defineEvent(AssetCreatedSchema, { key: "assetId" })

/**
 * `cqc.events.v1.asset_deleted`, ordered by `assetId`.
 *
 * @since 0.1.0
 * @category events
 */
export const AssetDeletedEvent: EventDef<typeof AssetDeletedSchema> = defineEvent(AssetDeletedSchema, { key: "assetId" })

/**
 * `cqc.events.v1.price_updated`, ordered by `assetId`.
 *
 * @since 0.1.0
 * @category events
 */
export const PriceUpdatedEvent: EventDef<typeof PriceUpdatedSchema> = defineEvent(PriceUpdatedSchema, { key: "assetId" })

/**
 * `cqc.events.v1.position_changed`, ordered by `accountId`.
 *
 * @since 0.1.0
 * @category events
 */
export const PositionChangedEvent: EventDef<typeof PositionChangedSchema> = defineEvent(PositionChangedSchema, {
  key: "accountId"
})
