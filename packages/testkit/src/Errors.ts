/**
 * The errors of the testkit, in one module. A test that cannot get its `nats-server` (or its cluster) fails with a
 * tagged error whose `reason` says what went wrong and whose message carries what is needed to see why (the command
 * line and the server's last log lines), on the Promise API and the Effect API alike; `waitUntil` fails with
 * `WaitTimeout`.
 *
 * @module
 */
import { TaggedErrorBase } from "@cqbus/core/backend"

/**
 * Why a test server could not be started (or paused):
 * - `BinaryNotFound`: the executable is not on `PATH`;
 * - `Spawn`: the executable could not be run for another reason;
 * - `Exited`: the process exited (or was killed) before it was ready;
 * - `StartTimeout`: it was not ready within `startTimeout`;
 * - `PortInUse`: its port stayed held by another process for `startTimeout`;
 * - `NotReady`: it logged "Server is ready" but its port did not answer as a JetStream server of its own;
 * - `PauseTimeout`: it did not stop within 5 s of SIGSTOP;
 * - `Setup`: the launcher could not prepare the start (temporary store, configuration file, a free port).
 *
 * @since 0.1.0
 * @category errors
 */
export type NatsServerErrorReason =
  | "BinaryNotFound"
  | "Spawn"
  | "Exited"
  | "StartTimeout"
  | "PortInUse"
  | "NotReady"
  | "PauseTimeout"
  | "Setup"

/**
 * A test server could not be started, restarted or paused. The message names the cause, the command line and the
 * last lines of the server's log; `command` and `logTail` hold them apart.
 *
 * @since 0.1.0
 * @category errors
 */
export class NatsServerError extends TaggedErrorBase<{
  readonly reason: NatsServerErrorReason
  readonly message: string
  /** The command line that was run, shell-quoted (empty when no process was started). */
  readonly command: string
  /** The last lines of the server's log. */
  readonly logTail: ReadonlyArray<string>
  readonly cause?: unknown
}> {
  readonly _tag = "NatsServerError"
}

/**
 * Why a test cluster did not become usable:
 * - `NoMetaLeader`: its nodes did not agree on a JetStream meta leader in time (at start, or after a node's restart);
 * - `NoLeader`: `waitForLeader` found no (other) leader in time.
 *
 * @since 0.1.0
 * @category errors
 */
export type NatsClusterErrorReason = "NoMetaLeader" | "NoLeader"

/**
 * A test cluster did not reach the state a test waits for. A node that cannot start fails with `NatsServerError`.
 *
 * @since 0.1.0
 * @category errors
 */
export class NatsClusterError extends TaggedErrorBase<{
  readonly reason: NatsClusterErrorReason
  readonly message: string
  /** The cluster name. */
  readonly cluster: string
}> {
  readonly _tag = "NatsClusterError"
}

/**
 * `waitUntil`'s condition did not hold within its time; the message names what was awaited.
 *
 * @since 0.1.0
 * @category errors
 */
export class WaitTimeout extends TaggedErrorBase<{
  readonly message: string
  /** How long it waited, in milliseconds of the chosen time. */
  readonly within: number
}> {
  readonly _tag = "WaitTimeout"
}
