// The cluster launcher itself: three routed nodes with their own ports, names and stores, ready with a meta leader;
// leaders of a replicated stream and its consumer found by name; kill, pause/resume and restart of a node.
import assert from "node:assert/strict"
import { test } from "node:test"
import { AckPolicy, jetstreamManager } from "@nats-io/jetstream"
import { connect } from "@nats-io/transport-node"
import { Effect } from "effect"
import { NatsCluster } from "@cqbus/testkit/nats-cluster"

test("NatsCluster: three routed nodes, leaders found by name, a node killed, paused and restarted", { timeout: 90_000 }, () =>
  Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const cluster = yield* NatsCluster.NatsCluster
    assert.deepEqual(cluster.nodes.map((node) => node.name), ["n1", "n2", "n3"])
    assert.equal(new Set(cluster.nodes.map((node) => node.server.port)).size, 3)
    assert.equal(new Set(cluster.nodes.map((node) => node.clusterPort)).size, 3)
    assert.equal(new Set(cluster.nodes.map((node) => node.server.storeDir)).size, 3)
    assert.deepEqual(cluster.urls, cluster.nodes.map((node) => node.url))
    // Ready means a meta leader exists: a replicated stream can be created at once.
    assert.ok((yield* Effect.promise(() => cluster.metaLeader())) !== undefined, "a meta leader once started")

    const nc = yield* Effect.acquireRelease(
      Effect.promise(() => connect({ servers: [...cluster.urls], reconnectTimeWait: 100 })),
      (nc) => Effect.promise(() => nc.close())
    )
    const jsm = yield* Effect.promise(() => jetstreamManager(nc))
    yield* Effect.promise(() => jsm.streams.add({ name: "LAUNCHER", subjects: ["launcher.>"], num_replicas: 3 }))
    yield* Effect.promise(() => jsm.consumers.add("LAUNCHER", { durable_name: "reader", ack_policy: AckPolicy.Explicit }))

    const leader = yield* Effect.promise(() => cluster.waitForLeader(() => cluster.streamLeader("LAUNCHER")))
    const info = yield* Effect.promise(() => jsm.streams.info("LAUNCHER"))
    assert.equal(leader.name, info.cluster?.leader, "the stream leader as the server reports it")
    const consumerLeader = yield* Effect.promise(() =>
      cluster.waitForLeader(() => cluster.consumerLeader("LAUNCHER", "reader"))
    )
    const consumerInfo = yield* Effect.promise(() => jsm.consumers.info("LAUNCHER", "reader"))
    assert.equal(consumerLeader.name, consumerInfo.cluster?.leader, "the consumer leader as the server reports it")
    assert.equal(cluster.node(leader.name), leader)

    // A crash of the stream leader: another node takes over; the old one comes back on its ports and store.
    yield* Effect.promise(() => leader.kill())
    assert.equal(leader.isRunning, false)
    const next = yield* Effect.promise(() => cluster.waitForLeader(() => cluster.streamLeader("LAUNCHER"), { not: leader }))
    assert.notEqual(next, leader)
    const port = leader.server.port
    yield* Effect.promise(() => leader.restart())
    assert.equal(leader.isRunning, true)
    assert.equal(leader.server.port, port)

    // A frozen follower is alive but silent; thawed, it answers again.
    const follower = cluster.nodes.find((node) => node !== next)!
    yield* Effect.promise(() => follower.pause())
    assert.equal(follower.isPaused, true)
    assert.equal(follower.isRunning, true)
    const probe = yield* Effect.promise(() =>
      connect({ servers: follower.url, timeout: 500, reconnect: false }).then((c) => c.close().then(() => "connected"), () => "silent")
    )
    assert.equal(probe, "silent")
    yield* Effect.promise(() => follower.resume())
    assert.equal(follower.isPaused, false)
    const again = yield* Effect.promise(() => connect({ servers: follower.url, timeout: 5_000, reconnect: false }))
    yield* Effect.promise(() => again.close())
    assert.ok((yield* Effect.promise(() => cluster.waitForLeader(() => cluster.metaLeader()))) !== undefined)
  }).pipe(Effect.provide(NatsCluster.layer())))))
