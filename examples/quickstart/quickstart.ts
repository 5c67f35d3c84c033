/**
 * The cqbus quickstart: typed handlers in three groups on the in-memory bus, a handful of typed events, one transient
 * failure that is retried, one event the handler rejects (it lands in the dead letters), and a report of what flowed.
 * `main.ts` runs it with `console.log`; `test/quickstart.test.ts` runs the same program and checks the report.
 *
 * @module
 */
import { Backoff, type DeadLetter, type Delivery, EventBus, HeaderNames, newEventId, Reject, Transport } from "@cqbus/core"
import {
  AssetClass,
  AssetCreatedEvent,
  PositionChangedEvent,
  PositionChangeReason,
  PriceUpdatedEvent
} from "@cqbus/testkit/events"
import { Data, Effect, type Layer, type Scope } from "effect"

/** One handler run, as the quickstart saw it. */
export interface Run {
  readonly group: string
  readonly topic: string
  readonly eventId: string
  readonly attempt: number
  readonly result: "ok" | "retry" | "reject"
}

/** What the quickstart reports at the end. */
export interface QuickstartReport {
  readonly published: number
  readonly runs: ReadonlyArray<Run>
  readonly deadLetters: ReadonlyArray<{
    readonly eventId: string | undefined
    readonly topic: string
    readonly group: string | undefined
    readonly errorTag: string
    readonly deliveryCount: number
    readonly reason: string
  }>
}

/** A made-up transient failure (a cache that is warming up): any error other than `Reject` means "try again later". */
class QuoteStoreBusy extends Data.TaggedError("QuoteStoreBusy")<{ readonly symbol: string }> {}

/** Fixed-width columns, so the lines of the log line up. */
const columns = (...widths: ReadonlyArray<number>) => (...cells: ReadonlyArray<string | number>): string =>
  cells.map((cell, i) => String(cell).padEnd(widths[i] ?? 0)).join(" ").trimEnd()
const row = columns(8, 31, 9, 4, 10)
const deadRow = columns(31, 10, 9, 11)
const short = (eventId: string): string => eventId.slice(0, 8)

/**
 * The program: it needs a bus whose transport can list its dead letters (the memory transport and the NATS
 * transport both can) and a scope for its subscriptions.
 */
export const quickstart = (
  log: (line: string) => void
): Effect.Effect<QuickstartReport, Error, EventBus.EventBus | Transport.Transport | Scope.Scope> =>
  Effect.gen(function*() {
    const bus = yield* EventBus.EventBus
    const runs: Array<Run> = []
    // The ids of the events this run publishes (a broker may still hold events of earlier runs).
    const ids = new Set<string>()
    const fresh = (): string => {
      const id = newEventId()
      ids.add(id)
      return id
    }
    // Every handler reports what it decided; the bus turns its result into ack / redeliver / dead-letter.
    const report = (group: string, d: Delivery, result: Run["result"], details: string) =>
      Effect.sync(() => {
        runs.push({ group, topic: d.topic, eventId: d.eventId, attempt: d.attempt, result })
        log(row(result === "ok" ? "handled" : result, d.topic, short(d.eventId), d.attempt, group, details))
      })

    // 1. Subscribe. A group is a durable consumer: its members share the messages, other groups get their own copy.
    //    The subscription exists when `subscribe` returns and drains when the scope closes.
    yield* bus.subscribe(AssetCreatedEvent, (asset, d) =>
      report("catalog", d, "ok",
        `${asset.symbol} "${asset.name}" ${AssetClass[asset.assetClass]} ${asset.quoteCurrency}`), { group: "catalog" })

    yield* bus.subscribe(PriceUpdatedEvent, (price, d) =>
      Effect.gen(function*() {
        const details = `${price.symbol} ${price.price} ${price.currency}`
        // A bad price will never become good: `Reject` dead-letters it at once, without retrying.
        if (!(Number(price.price) > 0)) {
          yield* report("pricing", d, "reject", `${details} (not a positive price)`)
          return yield* Effect.fail(new Reject({ reason: `price must be positive, got ${price.price}` }))
        }
        // Any other failure is redelivered after the backoff; `d.attempt` counts the deliveries.
        if (price.symbol === "BTC" && d.attempt === 1) {
          yield* report("pricing", d, "retry", `${details} (quote store busy, retry in 200 ms)`)
          return yield* Effect.fail(new QuoteStoreBusy({ symbol: price.symbol }))
        }
        yield* report("pricing", d, "ok", details)
      }), { group: "pricing", backoff: Backoff.constant("200 millis"), maxDeliver: 3 })

    yield* bus.subscribe(PositionChangedEvent, (pos, d) =>
      report("portfolio", d, "ok", `${pos.accountId} ${pos.assetId} ${pos.previousQuantity} -> ${pos.quantity} ` +
        `(${PositionChangeReason[pos.reason]})`), { group: "portfolio" })

    // 2. Publish typed events: each message is checked against its protobuf schema at compile time. The event id is
    //    optional (the bus makes one); choosing it lets a publisher retry without creating duplicates.
    log(row("step", "topic", "event id", "try", "group", "details"))
    const assets = [
      { assetId: "asset-aapl", symbol: "AAPL", name: "Apple Inc.",
        assetClass: AssetClass.EQUITY, quoteCurrency: "USD" },
      { assetId: "asset-btc", symbol: "BTC", name: "Bitcoin",
        assetClass: AssetClass.CRYPTO, quoteCurrency: "USD" }
    ]
    for (const asset of assets) {
      const eventId = fresh()
      yield* bus.publish(AssetCreatedEvent, asset, { eventId })
      log(row("publish", AssetCreatedEvent.topic, short(eventId), "", "", asset.symbol))
    }
    const prices = [
      { assetId: "asset-aapl", symbol: "AAPL", price: "189.25", currency: "USD", source: "xnas" },
      { assetId: "asset-btc", symbol: "BTC", price: "67250.10", currency: "USD", source: "coinbase" }, // fails once
      { assetId: "asset-aapl", symbol: "AAPL", price: "-1.00", currency: "USD", source: "xnas" } // rejected
    ]
    for (const price of prices) {
      const eventId = fresh()
      yield* bus.publish(PriceUpdatedEvent, price, { eventId })
      log(row("publish", PriceUpdatedEvent.topic, short(eventId), "", "", `${price.symbol} ${price.price}`))
    }
    const eventId = fresh()
    yield* bus.publish(PositionChangedEvent, {
      accountId: "acct-42",
      assetId: "asset-aapl",
      previousQuantity: "0",
      quantity: "150",
      reason: PositionChangeReason.TRADE,
      tradeId: "t-1001",
      version: 1n
    }, { eventId })
    log(row("publish", PositionChangedEvent.topic, short(eventId), "", "", "acct-42 AAPL +150"))
    const published = assets.length + prices.length + 1

    // 3. Wait until every event is settled: handled successfully or dead-lettered (polling, bounded by a timeout).
    const transport = yield* Transport.Transport
    const listDeadLetters: Effect.Effect<ReadonlyArray<DeadLetter>> = transport.deadLetters ?? Effect.succeed([])
    // A broker keeps dead letters of earlier runs: only this run's count (they carry this run's event ids).
    const ours = Effect.map(listDeadLetters, (all) => all.filter((dl) => ids.has(dl.headers[HeaderNames.id] ?? "")))
    const settled = Effect.map(ours, (dead) => runs.filter((r) => r.result === "ok" && ids.has(r.eventId)).length + dead.length)
    yield* Effect.gen(function*() {
      while ((yield* settled) < published) yield* Effect.sleep("10 millis")
    }).pipe(Effect.timeoutOrElse({
      duration: "5 seconds",
      orElse: () => Effect.fail(new Error("the events were not all settled within 5 seconds"))
    }))

    // 4. The dead letters keep the original bytes and headers, and say why and after how many deliveries.
    const deadLetters = (yield* ours).map((dl) => ({
      eventId: dl.headers[HeaderNames.id], // the CloudEvents id travels in the headers
      topic: dl.subject,
      group: dl.group,
      errorTag: dl.errorTag,
      deliveryCount: dl.deliveryCount,
      reason: dl.reason
    }))
    log("")
    log(deadRow("dead letter topic", "group", "errorTag", "deliveries", "reason"))
    for (const dl of deadLetters) log(deadRow(dl.topic, dl.group ?? "-", dl.errorTag, dl.deliveryCount, dl.reason))
    const ok = runs.filter((r) => r.result === "ok")
    const retried = ok.filter((r) => r.attempt > 1).length
    log("")
    log(`summary: ${published} published, ${ok.length} handled (${retried} after a retry), ` +
      `${runs.length} handler runs, ${deadLetters.length} dead-lettered`)
    return { published, runs, deadLetters }
  })

/**
 * Runs the quickstart on a bus (default: a fresh in-memory bus, without the bus's default failure warnings: this
 * program prints its own line for every retry and rejection); the scope closes (subscriptions drain) before the
 * promise settles.
 */
export const runQuickstart = (
  log: (line: string) => void,
  layer: Layer.Layer<EventBus.EventBus | Transport.Transport, Error> = EventBus.layerMemory({ logFailures: false })
): Promise<QuickstartReport> => Effect.runPromise(quickstart(log).pipe(Effect.scoped, Effect.provide(layer)))
