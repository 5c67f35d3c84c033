/**
 * The CQC example events: their protobuf code (protoc-gen-es) and their typed `EventDef`s, topic constants and
 * per-file event tuples (protoc-gen-cqbus), all generated from proto/cqc/events/v1 by `npm run gen`. The conformance
 * suite, the examples and the benchmarks use them; user code generates its own events the same way (docs/codegen.md).
 * Nothing here is written by hand: the topics and ordering keys come from the `.proto` files.
 *
 * @module
 */
export * from "./gen/cqc/events/v1/asset_events.ts"
export * from "./gen/cqc/events/v1/asset_pb.ts"
export * from "./gen/cqc/events/v1/position_events.ts"
export * from "./gen/cqc/events/v1/position_pb.ts"
export * from "./gen/cqc/events/v1/price_events.ts"
export * from "./gen/cqc/events/v1/price_pb.ts"
