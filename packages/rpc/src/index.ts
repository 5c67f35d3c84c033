/**
 * `@cqbus/rpc`: typed request-reply for protobuf services. `defineService` binds a service to one subject per unary
 * method, `makeRpcClient` calls its methods and `serveRpc` answers them, over the byte-level `RequestReply` port that
 * a backend implements (`NatsRequestReply` in `@cqbus/nats` over core NATS; `MemoryRequestReply.layer()` in process).
 * Generated code (`protoc-gen-cqbus`) only binds names and types to these functions.
 *
 * @module
 */
export {
  NoResponders,
  noResponders,
  RequestFailed,
  type RequestFailedReason,
  RequestTimeout,
  requestTimeout,
  RpcError,
  ServeError
} from "./Errors.ts"
export * as MemoryRequestReply from "./MemoryRequestReply.ts"
export * as RequestReply from "./RequestReply.ts"
export type { IncomingRequest, Reply, RequestReplyShape } from "./RequestReply.ts"
export {
  type CallOptions,
  makeRpcClient,
  type RequestError,
  type RpcClient,
  type RpcClientOptions
} from "./RpcClient.ts"
export { RpcErrorHeaders } from "./RpcErrorHeaders.ts"
export { type RequestInfo, type RpcHandlers, type RpcServeOptions, serveRpc } from "./RpcServer.ts"
export {
  defineService,
  type InputOf,
  methodSubject,
  type OutputOf,
  type ServiceDef,
  type UnaryMethodName
} from "./ServiceDef.ts"
