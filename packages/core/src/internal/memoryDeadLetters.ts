/**
 * The memory transport's dead letters: the records in the order they were stored, each with an id that grows and is
 * never reused (its position in the store's history), and the `deadLetterStore` capability over them (listing by id
 * with filters, get, remove, purge). `MemoryTransport` adds records; `DeadLetters` administers them.
 */
import { Effect } from "effect"
import { matchesFilter } from "../DeadLetters.ts"
import { DeadLetterError } from "../Errors.ts"
import { lowerBound } from "./memoryLog.ts"
import type { DeadLetter, DeadLetterEntry, DeadLetterStore } from "../Transport.ts"

/** The memory store of dead letters. */
export interface MemoryDeadLetters {
  /** Stores a dead letter (it gets the next id). */
  readonly add: (letter: DeadLetter) => void
  /** Every record still stored, oldest first (the `deadLetters` capability). */
  readonly all: () => ReadonlyArray<DeadLetter>
  /** The `deadLetterStore` capability. */
  readonly store: DeadLetterStore
}

interface Stored {
  readonly id: number
  readonly letter: DeadLetter
}

const idOf = (record: Stored): number => record.id

/** An id or cursor as its number: a positive integer in decimal, else `undefined`. */
const parseId = (id: string): number | undefined => /^[1-9][0-9]{0,15}$/.test(id) ? Number(id) : undefined

const badCursor = (cursor: string): DeadLetterError =>
  new DeadLetterError({ reason: "InvalidQuery", message: `${JSON.stringify(cursor)} is not a cursor of the memory dead letters` })

export const makeMemoryDeadLetters = (): MemoryDeadLetters => {
  let records: Array<Stored> = []
  let nextId = 1

  const entryOf = ({ id, letter }: Stored): DeadLetterEntry => ({ ...letter, id: String(id) })

  const find = (id: string): number => {
    const n = parseId(id)
    if (n === undefined) return -1
    const at = lowerBound(records, 0, n, idOf)
    return records[at]?.id === n ? at : -1
  }

  const removeWhere = (drop: (record: Stored) => boolean): number => {
    const before = records.length
    records = records.filter((record) => !drop(record))
    return before - records.length
  }

  const store: DeadLetterStore = {
    list: (query) =>
      Effect.suspend(() => {
        const start = query.cursor === undefined ? 1 : parseId(query.cursor)
        if (start === undefined) return Effect.fail(badCursor(query.cursor!))
        const matches = matchesFilter(query)
        const items: Array<DeadLetterEntry> = []
        for (let i = lowerBound(records, 0, start, idOf); i < records.length; i++) {
          const record = records[i]!
          const entry = entryOf(record)
          if (!matches(entry)) continue
          if (items.length === query.limit) return Effect.succeed({ items, next: String(record.id) })
          items.push(entry)
        }
        return Effect.succeed({ items })
      }),
    get: (id) =>
      Effect.sync(() => {
        const at = find(id)
        return at < 0 ? undefined : entryOf(records[at]!)
      }),
    remove: (ids) =>
      Effect.sync(() => {
        const wanted = new Set(ids.map(parseId))
        return removeWhere((record) => wanted.has(record.id))
      }),
    purge: (filter) =>
      Effect.sync(() => {
        const matches = matchesFilter(filter)
        return removeWhere((record) => matches(entryOf(record)))
      })
  }

  return {
    add: (letter) => {
      records.push({ id: nextId++, letter })
    },
    all: () => records.map((record) => record.letter),
    store
  }
}
