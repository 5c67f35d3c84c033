/**
 * How two NATS subjects or wildcard patterns relate, token by token: whether one covers the other (every subject the
 * second matches, the first matches too) and whether they overlap (some subject matches both). Routing asks the first
 * question (which stream holds every event of a subscription), the configuration check the second (two streams that
 * would capture the same subject, which nats-server refuses). Both assume valid subjects (`Options.patterns`).
 */

/**
 * Whether `outer` matches every subject `inner` matches: `cqc.events.v1.>` covers `cqc.events.v1.*`,
 * `cqc.events.v1.x` and itself; `cqc.*.v1.x` covers `cqc.events.v1.x`; `cqc.events.v1.*` does not cover
 * `cqc.events.v1.>` (one token against one or more).
 */
export const covers = (outer: string, inner: string): boolean => {
  const o = outer.split(".")
  const i = inner.split(".")
  for (let k = 0; k < o.length; k++) {
    const token = o[k]
    // `>` matches one or more tokens of anything, wildcards included; `inner` must still have one here.
    if (token === ">") return k < i.length
    if (k >= i.length) return false
    const theirs = i[k]
    if (theirs === ">") return false
    if (token !== "*" && token !== theirs) return false
  }
  return o.length === i.length
}

/** Whether some subject matches both `a` and `b`: `cqc.*.x` and `cqc.events.>` overlap, `cqc.a` and `cqc.b` do not. */
export const overlaps = (a: string, b: string): boolean => {
  const x = a.split(".")
  const y = b.split(".")
  for (let k = 0; k < x.length && k < y.length; k++) {
    if (x[k] === ">" || y[k] === ">") return true
    if (x[k] !== "*" && y[k] !== "*" && x[k] !== y[k]) return false
  }
  return x.length === y.length
}

/** Whether any of `subjects` covers `topic` (a subject or a pattern). */
export const coveredBy = (subjects: ReadonlyArray<string>, topic: string): boolean =>
  subjects.some((subject) => covers(subject, topic))
