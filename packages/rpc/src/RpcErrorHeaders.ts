/**
 * The wire contract of request-reply, the NATS micro conventions, so Go services built on `nats.go/micro`
 * interoperate: the request body is the protobuf binary of the method's input; a successful reply is the protobuf
 * binary of its output; an error reply has an empty body and the two headers named here, the `RpcError` code and its
 * message. Subjects are `methodSubject`'s (see `ServiceDef.ts`).
 *
 * @module
 */

/**
 * The header names of an error reply (the NATS micro names, so `nats.go/micro` clients and servers read them).
 *
 * @since 0.1.0
 * @category models
 */
export const RpcErrorHeaders: { readonly code: "Nats-Service-Error-Code"; readonly message: "Nats-Service-Error" } = {
  code: "Nats-Service-Error-Code",
  message: "Nats-Service-Error"
}
