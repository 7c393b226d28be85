import { applyGfs, gfsEnabled, type GfsPolicy, type GfsRule } from './gfs-policy.ts'

/**
 * Which completed backups of a plan retention keeps, and why. A backup is kept when ANY of these holds (the union,
 * like restic's `forget` with several --keep-* options):
 *
 * - `newest`: it is the newest completed backup of the plan: never deleted, whatever its age;
 * - `retentionDays`: it has not reached its expiresAt yet (finishedAt + the plan's retentionDays);
 * - `daily` / `weekly` / `monthly` / `yearly`: a GFS rule of the plan keeps it (services/gfs-policy.ts).
 *
 * So retentionDays is a floor: GFS only keeps backups longer, never deletes younger ones. For pure GFS set
 * retentionDays to 1. Everything else is deleted. Pure: `now` is an argument.
 */

export type KeepReason = 'newest' | 'retentionDays' | GfsRule

export interface RetentionCandidate {
  id: string
  createdAt: Date
  expiresAt: Date | null
}

export interface RetentionPolicy extends GfsPolicy {
  retentionDays: number
  timezone: string
}

export interface RetentionVerdict {
  id: string
  keep: boolean
  reasons: KeepReason[]
}

/** Verdicts for the live completed backups of one plan, newest first. */
export function decideRetention (candidates: readonly RetentionCandidate[], policy: RetentionPolicy, now: Date): RetentionVerdict[] {
  const list = [...candidates].sort((a, b) => b.createdAt.getTime() - a.createdAt.getTime() || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
  const gfs = gfsEnabled(policy) ? applyGfs(list.map((c) => ({ id: c.id, at: c.createdAt })), policy, policy.timezone) : new Map<string, GfsRule[]>()
  return list.map((c, i) => {
    const reasons: KeepReason[] = []
    if (i === 0) reasons.push('newest')
    // A row without an expiry (made before expiries existed) is kept: nothing says it may go.
    if (c.expiresAt === null || c.expiresAt.getTime() > now.getTime()) reasons.push('retentionDays')
    reasons.push(...(gfs.get(c.id) ?? []))
    return { id: c.id, keep: reasons.length > 0, reasons }
  })
}

/** A short human sentence for the reasons a backup is kept (preview and logs). */
export function describeReasons (reasons: readonly KeepReason[], policy: RetentionPolicy): string {
  return reasons.map((r) => {
    switch (r) {
      case 'newest': return 'newest completed backup of the plan (never deleted)'
      case 'retentionDays': return `younger than retentionDays (${policy.retentionDays})`
      case 'daily': return `keepDaily (${policy.keepDaily})`
      case 'weekly': return `keepWeekly (${policy.keepWeekly})`
      case 'monthly': return `keepMonthly (${policy.keepMonthly})`
      case 'yearly': return `keepYearly (${policy.keepYearly})`
    }
  }).join('; ')
}

/** Why a backup is deleted (recorded on the row). */
export function deletionReason (policy: RetentionPolicy): string {
  return gfsEnabled(policy)
    ? `older than retentionDays (${policy.retentionDays}), not kept by keepDaily/keepWeekly/keepMonthly/keepYearly (${[policy.keepDaily, policy.keepWeekly, policy.keepMonthly, policy.keepYearly].map((n) => n ?? 0).join('/')}) and not the newest`
    : `older than retentionDays (${policy.retentionDays}) and not the newest`
}
