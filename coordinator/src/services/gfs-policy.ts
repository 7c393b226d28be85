/**
 * GFS (grandfather-father-son) retention with the semantics of restic's `forget --keep-daily/-weekly/-monthly/
 * -yearly` (internal/restic/snapshot_policy.go), as restic and borg users know them:
 *
 * - backups are walked newest first; each rule keeps the newest backup of each period (day, ISO week, month,
 *   year) that has at least one backup, until it has kept its count of periods. Periods without a backup do not
 *   count ("the last 7 days that have a backup", not "the last 7 calendar days").
 * - when a rule still has count left at the oldest backup, the oldest is kept too (restic >= 0.16: keeps the
 *   longest history while the count is not used up).
 * - `-1` keeps one per period without limit; null or 0 turns the rule off.
 * - a backup is kept when any rule keeps it; it carries every rule that did as its reasons.
 * - periods are calendar periods in the given IANA time zone (the plan's), weeks are ISO 8601 weeks (Monday
 *   first, the week-numbering year of the Thursday), like Go's `time.ISOWeek` in restic.
 *
 * Pure: no clock, no I/O.
 */

export interface GfsPolicy {
  keepDaily: number | null
  keepWeekly: number | null
  keepMonthly: number | null
  keepYearly: number | null
}

export type GfsRule = 'daily' | 'weekly' | 'monthly' | 'yearly'

export interface GfsItem {
  id: string
  /** When the backup was made (its period is taken from this instant in the time zone). */
  at: Date
}

const RULES: ReadonlyArray<{ rule: GfsRule, field: keyof GfsPolicy }> = [
  { rule: 'daily', field: 'keepDaily' },
  { rule: 'weekly', field: 'keepWeekly' },
  { rule: 'monthly', field: 'keepMonthly' },
  { rule: 'yearly', field: 'keepYearly' },
]

/** True when at least one rule is on. */
export function gfsEnabled (policy: GfsPolicy): boolean {
  return RULES.some(({ field }) => isOn(policy[field]))
}

function isOn (count: number | null): boolean {
  return count !== null && (count > 0 || count === -1)
}

/** The calendar date of an instant in a time zone. */
function localDate (at: Date, timeZone: string, cache: Map<string, Intl.DateTimeFormat>): { y: number, m: number, d: number } {
  let format = cache.get(timeZone)
  if (format === undefined) {
    format = new Intl.DateTimeFormat('en-US', { timeZone, year: 'numeric', month: 'numeric', day: 'numeric', hourCycle: 'h23' })
    cache.set(timeZone, format)
  }
  let y = 0
  let m = 0
  let d = 0
  for (const part of format.formatToParts(at)) {
    if (part.type === 'year') y = Number(part.value)
    else if (part.type === 'month') m = Number(part.value)
    else if (part.type === 'day') d = Number(part.value)
  }
  return { y, m, d }
}

/** ISO 8601 week of a calendar date: [week-numbering year, week]. */
export function isoWeek (y: number, m: number, d: number): [number, number] {
  const date = new Date(Date.UTC(y, m - 1, d))
  const weekday = date.getUTCDay() === 0 ? 7 : date.getUTCDay()
  // The Thursday of this week decides the year; its ordinal day decides the week.
  date.setUTCDate(date.getUTCDate() + 4 - weekday)
  const year = date.getUTCFullYear()
  const week = Math.ceil(((date.getTime() - Date.UTC(year, 0, 1)) / 86_400_000 + 1) / 7)
  return [year, week]
}

function periodKey (rule: GfsRule, date: { y: number, m: number, d: number }): number {
  switch (rule) {
    case 'daily': return date.y * 10000 + date.m * 100 + date.d
    case 'weekly': { const [year, week] = isoWeek(date.y, date.m, date.d); return year * 100 + week }
    case 'monthly': return date.y * 100 + date.m
    case 'yearly': return date.y
  }
}

/**
 * Applies the policy. Returns, for each backup kept by a GFS rule, the rules that keep it; backups absent from
 * the map are not kept by GFS (other reasons, like retentionDays, are the caller's).
 */
export function applyGfs (items: readonly GfsItem[], policy: GfsPolicy, timeZone: string): Map<string, GfsRule[]> {
  const kept = new Map<string, GfsRule[]>()
  if (!gfsEnabled(policy) || items.length === 0) return kept
  // Newest first; equal times in a stable order so the result never depends on the input order.
  const list = [...items].sort((a, b) => b.at.getTime() - a.at.getTime() || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
  const cache = new Map<string, Intl.DateTimeFormat>()
  const buckets = RULES.filter(({ field }) => isOn(policy[field])).map(({ rule, field }) => ({ rule, count: policy[field] as number, last: null as number | null }))
  for (const [nr, item] of list.entries()) {
    const date = localDate(item.at, timeZone, cache)
    const oldest = nr === list.length - 1
    for (const bucket of buckets) {
      if (bucket.count === 0) continue
      const key = periodKey(bucket.rule, date)
      if (key !== bucket.last || oldest) {
        bucket.last = key
        if (bucket.count > 0) bucket.count--
        const reasons = kept.get(item.id) ?? []
        reasons.push(bucket.rule)
        kept.set(item.id, reasons)
      }
    }
  }
  return kept
}
