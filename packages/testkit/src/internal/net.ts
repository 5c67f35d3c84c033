/**
 * Loopback helpers shared by the test-server launchers (`NatsServer`, `NatsCluster`): the host they bind and a way to
 * pick a port nobody holds.
 */
import net from "node:net"

/** Every launcher binds loopback only. */
export const HOST = "127.0.0.1"

/** A port that was free a moment ago: bind port 0 on loopback, read the port, close. */
export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = net.createServer()
    server.unref()
    server.once("error", reject)
    server.listen({ host: HOST, port: 0, exclusive: true }, () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : undefined
      server.close(() => (port === undefined ? reject(new Error("no port from a port-0 listener")) : resolve(port)))
    })
  })
