// The request-reply errors are tagged like core's: each prints as `Tag: message` (String, Cause.pretty), is caught by
// its tag, and `noResponders` / `requestTimeout` word the errors every backend returns.
import { NoResponders, noResponders, RequestFailed, RequestTimeout, requestTimeout, RpcError, ServeError } from "@cqbus/rpc"
import { Cause, Duration, Effect } from "effect"
import assert from "node:assert/strict"
import { test } from "node:test"

test("rpc errors: each prints as `Tag: message` in String() and Cause.pretty", () => {
  const samples = [
    new NoResponders({ subject: "s", message: "no responders for s" }),
    new RequestTimeout({ subject: "s", timeout: "1 second", message: "timed out" }),
    new RpcError({ code: "400", message: "bad" }),
    new RequestFailed({ subject: "s", reason: "Closed", message: "closed" }),
    new ServeError({ subject: "s", reason: "Closed", message: "closed" })
  ]
  for (const error of samples) {
    assert.equal(error.name, error._tag)
    assert.equal(String(error), `${error._tag}: ${error.message}`)
    assert.equal(Cause.pretty(Cause.fail(error)).split("\n")[0], `${error._tag}: ${error.message}`)
  }
})

test("rpc errors: the shared constructors name the subject, and the timeout in Duration.format's words", async () => {
  assert.equal(noResponders("a.b").message, "no responders for a.b: no server of this method is running")
  const late = requestTimeout("a.b", Duration.seconds(2))
  assert.equal(late.message, "request to a.b timed out after 2s")
  const caught = await Effect.runPromise(
    Effect.fail(late).pipe(Effect.catchTag("RequestTimeout", (error) => Effect.succeed(error.subject)))
  )
  assert.equal(caught, "a.b")
})
