// Credentials made at test time for the authentication and TLS tests (packages/nats/test/auth.test.ts): a CA with a server and
// a client certificate, a second CA nobody trusts, an nkey user, and an operator with an account and users whose
// `.creds` files a server in operator mode (`resolver: MEMORY`) accepts. Everything is written into a temporary
// directory the caller removes; nothing generated is committed. Not a test file itself (no `.test.ts`).
import { createAccount, createOperator, createUser, encodeAccount, encodeOperator, encodeUser, fmtCreds, type User } from "@nats-io/jwt"
import fs from "node:fs/promises"
import os from "node:os"
import path from "node:path"
import { generate } from "selfsigned"

/** A fresh temporary directory for one test's credentials; remove it with `fs.rm(dir, { recursive: true })`. */
export const tempDir = (): Promise<string> => fs.mkdtemp(path.join(os.tmpdir(), "cqbus-auth-"))

/** PEM files of a test PKI. */
export interface Certificates {
  /** The CA that signed the server and client certificates. */
  readonly caFile: string
  /** A CA that signed nothing here: a client trusting only it must refuse the server. */
  readonly otherCaFile: string
  /** The server's certificate (SANs 127.0.0.1 and localhost) and key. */
  readonly serverCertFile: string
  readonly serverKeyFile: string
  /** A client certificate for mutual TLS, signed by the CA, and its key. */
  readonly clientCertFile: string
  readonly clientKeyFile: string
}

const caExtensions = [
  { name: "basicConstraints", cA: true, critical: true },
  { name: "keyUsage", keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true }
] as const

const makeCa = (name: string) =>
  generate([{ name: "commonName", value: name }], {
    keyType: "ec",
    algorithm: "sha256",
    extensions: [...caExtensions]
  })

/** Writes a CA, a server and a client certificate signed by it, and an unrelated CA, as PEM files into `dir`. */
export const certificates = async (dir: string): Promise<Certificates> => {
  const ca = await makeCa("cqbus test CA")
  const other = await makeCa("cqbus untrusted CA")
  const leaf = (cn: string, extKeyUsage: { serverAuth?: boolean; clientAuth?: boolean }) =>
    generate([{ name: "commonName", value: cn }], {
      keyType: "ec",
      algorithm: "sha256",
      ca: { key: ca.private, cert: ca.cert },
      extensions: [
        { name: "basicConstraints", cA: false },
        { name: "keyUsage", digitalSignature: true, keyEncipherment: true },
        { name: "extKeyUsage", ...extKeyUsage },
        { name: "subjectAltName", altNames: [{ type: 2, value: "localhost" }, { type: 7, ip: "127.0.0.1" }] }
      ]
    })
  const server = await leaf("localhost", { serverAuth: true })
  const client = await leaf("cqbus test client", { clientAuth: true })
  const files = {
    caFile: ["ca.pem", ca.cert],
    otherCaFile: ["other-ca.pem", other.cert],
    serverCertFile: ["server.pem", server.cert],
    serverKeyFile: ["server-key.pem", server.private],
    clientCertFile: ["client.pem", client.cert],
    clientKeyFile: ["client-key.pem", client.private]
  } as const
  const out: Record<string, string> = {}
  for (const [key, [name, pem]] of Object.entries(files)) {
    out[key] = path.join(dir, name)
    await fs.writeFile(out[key], pem, { mode: 0o600 })
  }
  return out as unknown as Certificates
}

/** An nkey user: the seed a client signs with, and the public key the server config names. */
export const nkeyUser = (): { readonly seed: string; readonly publicKey: string } => {
  const kp = createUser()
  return { seed: new TextDecoder().decode(kp.getSeed()), publicKey: kp.getPublicKey() }
}

/** A user of the operator's account, as a `.creds` file (JWT + seed). */
export interface CredsUser {
  readonly credsFile: string
  readonly jwt: string
  readonly seed: string
}

/** An operator with one JetStream-enabled account (and the system account), for `resolver: MEMORY`. */
export interface Operator {
  /** The server configuration text (`operator`, `system_account`, `resolver`, `resolver_preload`). */
  readonly config: string
  /** Writes a `.creds` file for a new user of the account; `exp` (seconds since the epoch) makes it expire. */
  readonly user: (name: string, options?: { readonly exp?: number; readonly permissions?: Partial<User> }) => Promise<CredsUser>
}

/** Makes an operator, a system account and an application account with JetStream, and writes their JWTs into `dir`. */
export const operator = async (dir: string): Promise<Operator> => {
  const okp = createOperator()
  const sys = createAccount()
  const app = createAccount()
  const operatorJwt = await encodeOperator("cqbus-test", okp, { system_account: sys.getPublicKey() })
  const sysJwt = await encodeAccount("SYS", sys, {}, { signer: okp })
  const appJwt = await encodeAccount("APP", app, {
    // Unlimited: the library's defaults leave connections and subscriptions at 0 (the server refuses every client).
    limits: {
      conn: -1, subs: -1, data: -1, payload: -1, leaf: -1, imports: -1, exports: -1, wildcards: true,
      mem_storage: -1, disk_storage: -1, streams: -1, consumer: -1
    }
  }, { signer: okp })
  const operatorFile = path.join(dir, "operator.jwt")
  await fs.writeFile(operatorFile, operatorJwt)
  const config = [
    `operator: ${JSON.stringify(operatorFile)}`,
    `system_account: ${sys.getPublicKey()}`,
    "resolver: MEMORY",
    "resolver_preload: {",
    `  ${sys.getPublicKey()}: ${JSON.stringify(sysJwt)}`,
    `  ${app.getPublicKey()}: ${JSON.stringify(appJwt)}`,
    "}"
  ].join("\n")
  const user = async (name: string, options: { readonly exp?: number; readonly permissions?: Partial<User> } = {}) => {
    const ukp = createUser()
    const jwt = await encodeUser(name, ukp, app, options.permissions ?? {}, options.exp === undefined ? {} : { exp: options.exp })
    const credsFile = path.join(dir, `${name}.creds`)
    await fs.writeFile(credsFile, fmtCreds(jwt, ukp), { mode: 0o600 })
    return { credsFile, jwt, seed: new TextDecoder().decode(ukp.getSeed()) }
  }
  return { config, user }
}
