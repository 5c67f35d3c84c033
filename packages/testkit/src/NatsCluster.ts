/**
 * A three-node JetStream cluster for failover tests: `nats-server` processes on loopback, each with its own client
 * port, route port, `server_name` and temporary store, routed to each other under one cluster name. It is ready only
 * once JetStream has elected a meta leader, so replicated streams can be created at once. Any node can be killed
 * (SIGKILL), frozen (SIGSTOP) and thawed (SIGCONT), or restarted on the same ports and store, and the cluster names
 * the node that leads a stream or a consumer, so a test can take exactly that node away. Like `NatsServer`: `start`
 * (Promise), `make` (scoped) and `layer` (the `NatsCluster` service).
 *
 * Each node is a test server from `NatsServer.start` (the same process handling, readiness check and exit backstop);
 * this module adds the cluster configuration and asks the nodes' monitoring endpoint (`/jsz`) who leads what.
 *
 * @module
 */
import { Context, Effect, Layer, type Scope } from "effect"
import { NatsClusterError, NatsServerError } from "./Errors.ts"
import { freePort, HOST } from "./internal/net.ts"
import { commandLine, describeLaunch, setupError, sleep } from "./internal/process.ts"
import * as NatsServer from "./NatsServer.ts"

/**
 * How to start a test cluster. The options every node shares (binary, limits, extra configuration) are those of
 * `NatsServerOptions`; the launcher adds `server_name`, the `cluster` block and a monitoring port itself.
 *
 * @since 0.1.0
 * @category models
 */
export interface NatsClusterOptions extends Omit<NatsServer.NatsServerOptions, "monitoring" | "startTimeout"> {
  /** How many nodes (default 3; JetStream needs a majority of them up to elect leaders). */
  readonly nodes?: number
  /** The cluster name (default `cqbus-` plus a random suffix). */
  readonly name?: string
  /**
   * How long the start may take until every node is ready and they agree on a JetStream meta leader, and how long a
   * node's restart may take until it is ready and sees a meta leader again, in milliseconds (default 30,000).
   */
  readonly startTimeout?: number
}

/**
 * One node of a test cluster. `url`, `port`, `clusterPort` and `storeDir` stay the same across `restart()`.
 *
 * @since 0.1.0
 * @category models
 */
export interface NatsClusterNode {
  /** The node's `server_name` (`n1`, `n2`, ...), as JetStream names leaders and replicas. */
  readonly name: string
  /** `nats://127.0.0.1:PORT`: the node's client URL. */
  readonly url: string
  /** The route port the other nodes connect to. */
  readonly clusterPort: number
  /** The node as a single test server (pid, log, monitoring URL, store directory). */
  readonly server: NatsServer.NatsServerShape
  /** Whether the process is alive (a paused node is alive). */
  readonly isRunning: boolean
  /** Whether the node was paused (SIGSTOP) and not resumed since. */
  readonly isPaused: boolean
  /** Kills the node (SIGKILL), as in a crash; resolves when it has exited. */
  kill(): Promise<void>
  /** Freezes the node (SIGSTOP): its sockets stay open but it answers nothing, like a hung host. */
  pause(): Promise<void>
  /** Thaws a paused node (SIGCONT). */
  resume(): Promise<void>
  /**
   * Starts the node again on the same ports and store (stopping it first if it runs), and resolves when it is ready
   * and sees a JetStream meta leader again.
   */
  restart(): Promise<void>
}

/**
 * A running test cluster, as `start` resolves with it and the `NatsCluster` service holds it.
 *
 * @since 0.1.0
 * @category models
 */
export interface NatsClusterShape {
  /** The cluster name shared by the nodes. */
  readonly name: string
  /** The nodes, `n1` first. */
  readonly nodes: ReadonlyArray<NatsClusterNode>
  /** Every node's client URL, for a client that should follow the cluster (`servers: cluster.urls`). */
  readonly urls: ReadonlyArray<string>
  /** The node with this `server_name`. */
  node(name: string): NatsClusterNode | undefined
  /** The node that leads the JetStream meta group now, as the running nodes see it; `undefined` during an election. */
  metaLeader(): Promise<NatsClusterNode | undefined>
  /** The node that leads `stream` now (account `$G` unless given); `undefined` while it has no leader. */
  streamLeader(stream: string, account?: string): Promise<NatsClusterNode | undefined>
  /** The node that leads `consumer` on `stream` now; `undefined` while it has no leader. */
  consumerLeader(stream: string, consumer: string, account?: string): Promise<NatsClusterNode | undefined>
  /**
   * Waits until `find` names a leader other than `not` (e.g. the node just killed), and resolves with it; rejects
   * with a `NatsClusterError` (`NoLeader`) after `timeout` milliseconds (default 30,000).
   */
  waitForLeader(
    find: () => Promise<NatsClusterNode | undefined>,
    options?: { readonly not?: NatsClusterNode; readonly timeout?: number }
  ): Promise<NatsClusterNode>
  /** Stops every node and removes their stores. Safe to call more than once. */
  cleanup(): Promise<void>
}

const DEFAULT_NODES = 3
const DEFAULT_START_TIMEOUT_MS = 30_000
const POLL_MS = 100
// A paused or overloaded node must not stall a leader lookup.
const MONITOR_TIMEOUT_MS = 1_000

/** The parts of `/jsz` this module reads (nats-server 2.9+). */
interface Jsz {
  readonly meta_cluster?: { readonly leader?: string }
  readonly account_details?: ReadonlyArray<{
    readonly name?: string
    readonly stream_detail?: ReadonlyArray<{
      readonly name?: string
      readonly cluster?: { readonly leader?: string }
      readonly consumer_detail?: ReadonlyArray<{ readonly name?: string; readonly cluster?: { readonly leader?: string } }>
    }>
  }>
}

/** The `cluster` block and name of node `index` (0-based). */
const nodeConfig = (index: number, cluster: string, routePorts: ReadonlyArray<number>, extra: string | undefined) =>
  [
    `server_name: n${index + 1}`,
    "cluster {",
    `  name: ${cluster}`,
    `  listen: ${HOST}:${routePorts[index]}`,
    `  routes: [${routePorts.map((port) => `nats-route://${HOST}:${port}`).join(", ")}]`,
    "}",
    ...(extra === undefined ? [] : [extra])
  ].join("\n")

class Node implements NatsClusterNode {
  paused = false
  constructor(
    readonly name: string,
    readonly clusterPort: number,
    readonly server: NatsServer.NatsServerShape,
    private readonly rejoin: (node: Node) => Promise<void>
  ) {}

  get url(): string {
    return this.server.url
  }

  get isRunning(): boolean {
    return this.server.isRunning
  }

  get isPaused(): boolean {
    return this.paused && this.server.isRunning
  }

  /** `/jsz` of this node, or `undefined` when it is down, paused or does not answer in time. */
  async jsz(query = ""): Promise<Jsz | undefined> {
    if (!this.server.isRunning || this.paused || this.server.monitorUrl === undefined) return undefined
    try {
      const response = await fetch(`${this.server.monitorUrl}/jsz${query}`, {
        signal: AbortSignal.timeout(MONITOR_TIMEOUT_MS)
      })
      return response.ok ? (await response.json()) as Jsz : undefined
    } catch {
      return undefined
    }
  }

  kill(): Promise<void> {
    this.paused = false
    return this.server.kill()
  }

  async pause(): Promise<void> {
    await this.server.pause()
    this.paused = this.server.isRunning
  }

  async resume(): Promise<void> {
    await this.server.resume()
    this.paused = false
  }

  async restart(): Promise<void> {
    this.paused = false // the server's stop wakes a frozen process so it can act on its SIGTERM
    await this.server.restart()
    await this.rejoin(this)
  }
}

class Cluster implements NatsClusterShape {
  readonly urls: ReadonlyArray<string>
  constructor(
    readonly name: string,
    readonly nodes: ReadonlyArray<Node>,
    private readonly timeout: number
  ) {
    this.urls = nodes.map((node) => node.url)
  }

  node(name: string): NatsClusterNode | undefined {
    return this.nodes.find((node) => node.name === name)
  }

  /** The first leader name `pick` reads from a running node's `/jsz`, as a node. */
  private async leader(query: string, pick: (jsz: Jsz) => string | undefined): Promise<Node | undefined> {
    const answers = await Promise.all(this.nodes.map((node) => node.jsz(query)))
    for (const jsz of answers) {
      const name = jsz === undefined ? undefined : pick(jsz)
      const node = name === undefined || name === "" ? undefined : this.nodes.find((n) => n.name === name)
      if (node !== undefined && node.isRunning && !node.isPaused) return node
    }
    return undefined
  }

  metaLeader(): Promise<NatsClusterNode | undefined> {
    return this.leader("", (jsz) => jsz.meta_cluster?.leader)
  }

  private streamDetail(jsz: Jsz, stream: string, account: string) {
    return jsz.account_details?.find((a) => a.name === account)?.stream_detail?.find((s) => s.name === stream)
  }

  streamLeader(stream: string, account = "$G"): Promise<NatsClusterNode | undefined> {
    return this.leader("?accounts=true&streams=true", (jsz) => this.streamDetail(jsz, stream, account)?.cluster?.leader)
  }

  consumerLeader(stream: string, consumer: string, account = "$G"): Promise<NatsClusterNode | undefined> {
    return this.leader(
      "?accounts=true&streams=true&consumers=true",
      (jsz) => this.streamDetail(jsz, stream, account)?.consumer_detail?.find((c) => c.name === consumer)?.cluster?.leader
    )
  }

  async waitForLeader(
    find: () => Promise<NatsClusterNode | undefined>,
    options: { readonly not?: NatsClusterNode; readonly timeout?: number } = {}
  ): Promise<NatsClusterNode> {
    const deadline = Date.now() + (options.timeout ?? this.timeout)
    for (;;) {
      const leader = await find()
      if (leader !== undefined && leader !== options.not) return leader
      if (Date.now() > deadline) {
        throw new NatsClusterError({
          reason: "NoLeader",
          cluster: this.name,
          message: `no leader${options.not === undefined ? "" : ` other than ${options.not.name}`} within ${
            options.timeout ?? this.timeout
          } ms`
        })
      }
      await sleep(POLL_MS)
    }
  }

  /** Resolves once every running node names the same meta leader, which is up; the error names what was seen. */
  async waitForMeta(deadline: number, nodes: ReadonlyArray<Node> = this.nodes): Promise<void> {
    let seen = ""
    for (;;) {
      const answers = await Promise.all(nodes.map((node) => node.jsz()))
      const leaders = answers.map((jsz) => jsz?.meta_cluster?.leader ?? "")
      const leader = this.nodes.find((node) => node.name === leaders[0])
      if (leaders.every((name) => name !== "" && name === leaders[0]) && leader?.isRunning === true) return
      seen = nodes.map((node, i) => `${node.name} sees ${leaders[i] === "" ? "none" : leaders[i]}`).join(", ")
      const down = nodes.find((node) => !node.isRunning)
      if (down !== undefined) {
        const command = commandLine(down.server.command)
        const logTail = down.server.log
        throw new NatsServerError({
          reason: "Exited",
          message: describeLaunch(`cluster ${this.name}: node ${down.name} exited while waiting for a meta leader`, command, logTail),
          command,
          logTail
        })
      }
      if (Date.now() > deadline) {
        const first = nodes[0]!.server
        throw new NatsClusterError({
          reason: "NoMetaLeader",
          cluster: this.name,
          message: describeLaunch(
            `cluster ${this.name}: no JetStream meta leader within ${this.timeout} ms (${seen})`,
            commandLine(first.command),
            first.log
          )
        })
      }
      await sleep(POLL_MS)
    }
  }

  async cleanup(): Promise<void> {
    await Promise.all(this.nodes.map(async (node) => {
      if (node.isPaused) await node.resume()
      await node.server.cleanup()
    }))
  }
}

/**
 * Starts a JetStream cluster of `nodes` (default 3) `nats-server` processes on 127.0.0.1, each with free client and
 * route ports, `server_name` `n1`, `n2`, ..., a monitoring port and its own temporary store, all routed to each other
 * under one cluster name; resolves once every node is ready and they agree on a JetStream meta leader. Otherwise it
 * stops what it started and rejects with a `NatsServerError` (a node could not start) or a `NatsClusterError` (no
 * meta leader in time). Call `cleanup()` when done (a `finally`).
 *
 * @example
 * ```ts
 * import { test } from "node:test"
 * import { NatsCluster } from "@cqbus/testkit/nats-cluster"
 *
 * test("survives the stream leader's crash", async () => {
 *   const cluster = await NatsCluster.start()
 *   try {
 *     // connect with servers: cluster.urls, create a stream with num_replicas 3 named "EVENTS", then:
 *     const leader = await cluster.waitForLeader(() => cluster.streamLeader("EVENTS"))
 *     await leader.kill()
 *     await cluster.waitForLeader(() => cluster.streamLeader("EVENTS"), { not: leader })
 *     await leader.restart() // same ports, same store
 *   } finally {
 *     await cluster.cleanup()
 *   }
 * })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const start = async (options: NatsClusterOptions = {}): Promise<NatsClusterShape> => {
  const count = Math.max(1, Math.floor(options.nodes ?? DEFAULT_NODES))
  const timeout = options.startTimeout ?? DEFAULT_START_TIMEOUT_MS
  const deadline = Date.now() + timeout
  const name = options.name ?? `cqbus-${Math.random().toString(36).slice(2, 10)}`
  const routePorts: Array<number> = []
  while (routePorts.length < count) {
    const port = await freePort().catch((cause: unknown) => {
      throw setupError(`cluster ${name}: no free route port`, cause)
    })
    if (!routePorts.includes(port)) routePorts.push(port)
  }
  const started = await Promise.allSettled(routePorts.map((_, index) =>
    NatsServer.start({
      ...options,
      monitoring: true,
      startTimeout: Math.max(1_000, deadline - Date.now()),
      config: nodeConfig(index, name, routePorts, options.config)
    })
  ))
  const servers = started.flatMap((result) => (result.status === "fulfilled" ? [result.value] : []))
  const failed = started.find((result): result is PromiseRejectedResult => result.status === "rejected")
  if (failed !== undefined) {
    await Promise.all(servers.map((server) => server.cleanup()))
    throw failed.reason
  }
  let cluster: Cluster | undefined
  const rejoin = (node: Node) => cluster!.waitForMeta(Date.now() + timeout, [node])
  const nodes = servers.map((server, index) => new Node(`n${index + 1}`, routePorts[index]!, server, rejoin))
  cluster = new Cluster(name, nodes, timeout)
  try {
    await cluster.waitForMeta(deadline)
  } catch (error) {
    await cluster.cleanup()
    throw error
  }
  return cluster
}

/**
 * A scoped test cluster: started when the effect runs, stopped and its stores removed when the scope closes.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { NatsCluster } from "@cqbus/testkit/nats-cluster"
 *
 * const program = Effect.scoped(Effect.gen(function*() {
 *   const cluster = yield* NatsCluster.make()
 *   const leader = yield* Effect.promise(() => cluster.metaLeader())
 *   return leader?.name
 * }))
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: NatsClusterOptions = {}
): Effect.Effect<NatsClusterShape, NatsServerError | NatsClusterError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.tryPromise({
      try: () => start(options),
      catch: (cause) =>
        cause instanceof NatsServerError || cause instanceof NatsClusterError
          ? cause
          : setupError("cannot start a nats-server cluster", cause)
    }),
    (cluster) => Effect.promise(() => cluster.cleanup())
  )

const NatsClusterKey: Context.ServiceClass<NatsCluster, "@cqbus/testkit/NatsCluster", NatsClusterShape> = Context
  .Service<NatsCluster, NatsClusterShape>()("@cqbus/testkit/NatsCluster")

/**
 * The test cluster of the current scope, as a service: `yield* NatsCluster.NatsCluster` gives its
 * `NatsClusterShape`. Provided by `layer`.
 *
 * @since 0.1.0
 * @category services
 */
export class NatsCluster extends NatsClusterKey {}

/**
 * The `NatsCluster` service: a cluster started when the layer is built, stopped and its stores removed when the
 * layer is released.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: NatsClusterOptions = {}): Layer.Layer<NatsCluster, NatsServerError | NatsClusterError> =>
  Layer.effect(NatsCluster, make(options))
