/**
 * What the client and the server share: the unary methods of a `ServiceDef` with their subjects, and the text of a
 * protobuf codec failure.
 *
 * @module
 */
import type { DescMethod } from "@bufbuild/protobuf"
import type { ServiceDef } from "../ServiceDef.ts"

export const methods = (def: ServiceDef): ReadonlyArray<readonly [DescMethod, string]> =>
  def.service.methods.flatMap((m) => {
    const subject = (def.subjects as Record<string, string>)[m.localName]
    return subject === undefined ? [] : [[m, subject] as const]
  })

export const message = (cause: unknown): string => cause instanceof Error ? cause.message : String(cause)
