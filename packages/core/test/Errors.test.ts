// Tagged errors print as `Tag: message` everywhere a person reads them: String(error), the stack, Cause.pretty.
import {
  DecodeError,
  HandlerTimeout,
  HealthError,
  InvalidTopic,
  PublishError,
  Reject,
  RetryLater,
  SubscribeError
} from "@cqbus/core"
import { Cause, Effect, Exit } from "effect"
import assert from "node:assert/strict"
import { test } from "node:test"

const samples = [
  new InvalidTopic({ topic: "", problem: "Empty", position: undefined, message: "the topic is empty" }),
  new PublishError({ topic: "t", reason: "Closed", retriable: false, message: "cannot publish to t" }),
  new SubscribeError({ topic: "t", group: undefined, reason: "Closed", message: "cannot subscribe to t" }),
  new DecodeError({ topic: "t", typeName: "x.Y", message: "cannot decode" }),
  new HealthError({ component: "connection", message: "connection: closed" }),
  new Reject({ reason: "no" }),
  new RetryLater({ delay: "1 second" }),
  new HandlerTimeout({ timeout: "1 second", topic: "t" })
]

test("errors: every core error prints as `Tag: message`, in String(), its stack's first line and Cause.pretty", async () => {
  for (const error of samples) {
    const expected = `${error._tag}: ${error.message}`
    assert.equal(error.name, error._tag)
    assert.equal(String(error), expected)
    // Bun writes `Error:` into the stack at construction whatever the name; Cause.pretty corrects the first line.
    if (typeof (globalThis as { Bun?: unknown }).Bun === "undefined") {
      assert.equal(error.stack?.split("\n")[0], expected)
    }
    const exit = await Effect.runPromiseExit(Effect.fail(error))
    assert.ok(Exit.isFailure(exit))
    assert.equal(Cause.pretty(exit.cause).split("\n")[0], expected)
  }
})

test("errors: a failure is still caught by its tag and keeps its fields", async () => {
  const caught = await Effect.runPromise(
    Effect.fail(new PublishError({ topic: "t", reason: "Timeout", retriable: true, message: "late" })).pipe(
      Effect.catchTag("PublishError", (error) => Effect.succeed(`${error.reason}/${error.retriable}`))
    )
  )
  assert.equal(caught, "Timeout/true")
})
