import t from 'tap'
import { applyGfs, gfsEnabled, isoWeek, type GfsItem, type GfsPolicy } from '../src/services/gfs-policy.ts'
import { decideRetention, describeReasons, deletionReason, type RetentionPolicy } from '../src/services/retention-policy.ts'

const OFF: GfsPolicy = { keepDaily: null, keepWeekly: null, keepMonthly: null, keepYearly: null }
const at = (iso: string): Date => new Date(iso)
const item = (id: string, iso: string): GfsItem => ({ id, at: at(iso) })
/** The kept ids, sorted, with their reasons. */
const kept = (m: Map<string, string[]>): Record<string, string[]> => Object.fromEntries([...m].sort(([a], [b]) => a.localeCompare(b)))

t.test('no rule on: nothing is kept by GFS; 0 and null are off', async (t) => {
  const items = [item('a', '2024-05-01T10:00:00Z'), item('b', '2024-05-02T10:00:00Z')]
  t.same(kept(applyGfs(items, OFF, 'UTC')), {})
  t.same(kept(applyGfs(items, { ...OFF, keepDaily: 0, keepYearly: 0 }, 'UTC')), {})
  t.equal(gfsEnabled(OFF), false)
  t.equal(gfsEnabled({ ...OFF, keepWeekly: 0 }), false)
  t.equal(gfsEnabled({ ...OFF, keepWeekly: -1 }), true)
  t.same(kept(applyGfs([], { ...OFF, keepDaily: 3 }, 'UTC')), {})
})

t.test('keepDaily keeps the newest backup of each of the last N days that have one (gaps do not count)', async (t) => {
  const items = [
    item('d10-late', '2024-05-10T20:00:00Z'),
    item('d10-early', '2024-05-10T08:00:00Z'),
    item('d9', '2024-05-09T12:00:00Z'),
    // no backup on the 8th: the rule does not spend a count on it
    item('d7', '2024-05-07T12:00:00Z'),
    item('d6', '2024-05-06T12:00:00Z'),
    item('d5', '2024-05-05T12:00:00Z'),
  ]
  t.same(kept(applyGfs(items, { ...OFF, keepDaily: 3 }, 'UTC')), { 'd10-late': ['daily'], d7: ['daily'], d9: ['daily'] })
})

t.test('with count left at the oldest backup, the oldest is kept too (restic >= 0.16)', async (t) => {
  const items = [
    item('d3', '2024-05-03T12:00:00Z'),
    item('d2-late', '2024-05-02T18:00:00Z'),
    item('d2-early', '2024-05-02T06:00:00Z'),
    item('d1-late', '2024-05-01T18:00:00Z'),
    item('d1-early', '2024-05-01T06:00:00Z'),
  ]
  // 5 days asked, 3 exist: newest of each day, plus the oldest backup (same day as d1-late).
  t.same(kept(applyGfs(items, { ...OFF, keepDaily: 5 }, 'UTC')), { d3: ['daily'], 'd2-late': ['daily'], 'd1-late': ['daily'], 'd1-early': ['daily'] })
  // Count used up before the oldest: the oldest is not kept.
  t.same(kept(applyGfs(items, { ...OFF, keepDaily: 3 }, 'UTC')), { d3: ['daily'], 'd2-late': ['daily'], 'd1-late': ['daily'] })
  // A single backup is kept by any rule that is on.
  t.same(kept(applyGfs([item('only', '2024-05-01T00:00:00Z')], { ...OFF, keepYearly: 1 }, 'UTC')), { only: ['yearly'] })
})

t.test('ISO weeks: Monday starts a week; the week-numbering year is the Thursday\'s', async (t) => {
  t.same(isoWeek(2024, 1, 7), [2024, 1], 'Sunday 2024-01-07')
  t.same(isoWeek(2024, 1, 8), [2024, 2], 'Monday 2024-01-08')
  t.same(isoWeek(2020, 12, 31), [2020, 53], 'Thursday 2020-12-31')
  t.same(isoWeek(2021, 1, 1), [2020, 53], 'Friday 2021-01-01 still belongs to 2020-W53')
  t.same(isoWeek(2021, 1, 4), [2021, 1])
  t.same(isoWeek(2024, 12, 30), [2025, 1], 'Monday 2024-12-30 is 2025-W01')
  t.same(isoWeek(2026, 12, 31), [2026, 53])
  const items = [
    item('mon', '2024-01-08T09:00:00Z'),
    item('sun', '2024-01-07T09:00:00Z'),
    item('sat', '2024-01-06T09:00:00Z'),
    item('w53-fri', '2021-01-01T09:00:00Z'),
    item('w53-thu', '2020-12-31T09:00:00Z'),
    item('w52', '2020-12-27T09:00:00Z'),
  ]
  t.same(kept(applyGfs(items, { ...OFF, keepWeekly: 3 }, 'UTC')), { mon: ['weekly'], sun: ['weekly'], 'w53-fri': ['weekly'] })
  t.same(kept(applyGfs(items, { ...OFF, keepWeekly: 4 }, 'UTC')), { mon: ['weekly'], sun: ['weekly'], 'w53-fri': ['weekly'], w52: ['weekly'] })
})

t.test('keepMonthly and keepYearly keep the newest of each month / year', async (t) => {
  const items = [
    item('2025-02-03', '2025-02-03T01:00:00Z'),
    item('2025-01-31', '2025-01-31T01:00:00Z'),
    item('2025-01-02', '2025-01-02T01:00:00Z'),
    item('2024-12-31', '2024-12-31T01:00:00Z'),
    item('2024-06-30', '2024-06-30T01:00:00Z'),
    item('2023-12-31', '2023-12-31T01:00:00Z'),
    item('2023-01-01', '2023-01-01T01:00:00Z'),
  ]
  t.same(kept(applyGfs(items, { ...OFF, keepMonthly: 3 }, 'UTC')), { '2025-02-03': ['monthly'], '2025-01-31': ['monthly'], '2024-12-31': ['monthly'] })
  t.same(kept(applyGfs(items, { ...OFF, keepYearly: 2 }, 'UTC')), { '2025-02-03': ['yearly'], '2024-12-31': ['yearly'] })
  // 5 years asked, 3 exist: the oldest is kept too.
  t.same(kept(applyGfs(items, { ...OFF, keepYearly: 5 }, 'UTC')), { '2025-02-03': ['yearly'], '2024-12-31': ['yearly'], '2023-12-31': ['yearly'], '2023-01-01': ['yearly'] })
})

t.test('-1 keeps one per period without limit', async (t) => {
  const items = [
    item('mar', '2024-03-15T00:00:00Z'), item('feb-b', '2024-02-20T00:00:00Z'), item('feb-a', '2024-02-10T00:00:00Z'),
    item('jan', '2024-01-05T00:00:00Z'), item('dec', '2023-12-05T00:00:00Z'),
  ]
  // The oldest is kept by the oldest-backup rule as well (count never runs out): here it is its month's newest anyway.
  t.same(kept(applyGfs(items, { ...OFF, keepMonthly: -1 }, 'UTC')), { mar: ['monthly'], 'feb-b': ['monthly'], jan: ['monthly'], dec: ['monthly'] })
})

t.test('rules combine: a backup kept by several rules carries all of them', async (t) => {
  const items = [item('today', '2024-05-10T12:00:00Z'), item('yesterday', '2024-05-09T12:00:00Z'), item('last-month', '2024-04-10T12:00:00Z')]
  t.same(kept(applyGfs(items, { keepDaily: 1, keepWeekly: 1, keepMonthly: 2, keepYearly: 1 }, 'UTC')), {
    today: ['daily', 'weekly', 'monthly', 'yearly'],
    'last-month': ['monthly'],
  })
})

t.test('periods are calendar periods of the plan\'s time zone', async (t) => {
  // 23:30 UTC on the 9th is 01:30 on the 10th in Berlin (CEST, UTC+2).
  const items = [item('late', '2024-05-09T23:30:00Z'), item('early', '2024-05-09T10:00:00Z')]
  t.same(kept(applyGfs(items, { ...OFF, keepDaily: 1 }, 'UTC')), { late: ['daily'] }, 'one day in UTC: only its newest')
  t.same(kept(applyGfs(items, { ...OFF, keepDaily: 2 }, 'UTC')), { late: ['daily'], early: ['daily'] }, 'count left: the oldest too')
  t.same(kept(applyGfs([...items, item('older', '2024-05-08T10:00:00Z')], { ...OFF, keepDaily: 2 }, 'Europe/Berlin')), { late: ['daily'], early: ['daily'] }, 'two days in Berlin')
  t.same(kept(applyGfs([...items, item('older', '2024-05-08T10:00:00Z')], { ...OFF, keepDaily: 2 }, 'UTC')), { late: ['daily'], older: ['daily'] }, 'the same backups in UTC')
  // New year's eve in New York is already January in UTC.
  const nye = [item('ny-eve', '2024-01-01T03:00:00Z'), item('dec', '2023-12-15T03:00:00Z')]
  t.same(kept(applyGfs(nye, { ...OFF, keepYearly: 1 }, 'America/New_York')), { 'ny-eve': ['yearly'] })
  t.same(kept(applyGfs([...nye, item('nov', '2023-11-01T03:00:00Z')], { ...OFF, keepYearly: 2 }, 'America/New_York')), { 'ny-eve': ['yearly'], nov: ['yearly'] }, 'ny-eve is 2023 in New York; oldest kept with count left')
  t.same(kept(applyGfs([...nye, item('nov', '2023-11-01T03:00:00Z')], { ...OFF, keepYearly: 2 }, 'UTC')), { 'ny-eve': ['yearly'], dec: ['yearly'] }, 'in UTC ny-eve is 2024')
})

t.test('the result does not depend on the input order; equal times are ordered by id', async (t) => {
  const items = Array.from({ length: 40 }, (_, i) => item(`b${String(i).padStart(2, '0')}`, new Date(Date.UTC(2024, 0, 1) + Math.floor(i / 2) * 86_400_000).toISOString()))
  const policy = { keepDaily: 5, keepWeekly: 2, keepMonthly: 1, keepYearly: null }
  const expected = kept(applyGfs(items, policy, 'UTC'))
  for (let round = 0; round < 20; round++) {
    const shuffled = [...items].sort(() => Math.random() - 0.5)
    t.same(kept(applyGfs(shuffled, policy, 'UTC')), expected)
  }
  // Two backups per day at the same instant: the one with the smaller id counts as newer.
  t.same(Object.keys(expected).filter((id) => expected[id]?.includes('daily')), ['b30', 'b32', 'b34', 'b36', 'b38'])
})

t.test('a year of daily backups with 7 daily, 4 weekly, 12 monthly, 2 yearly', async (t) => {
  // Daily at 02:00 UTC from 2024-01-01 to 2025-02-05 (a Wednesday).
  const items: GfsItem[] = []
  for (let d = Date.UTC(2024, 0, 1, 2); d <= Date.UTC(2025, 1, 5, 2); d += 86_400_000) items.push({ id: new Date(d).toISOString().slice(0, 10), at: new Date(d) })
  const result = kept(applyGfs(items, { keepDaily: 7, keepWeekly: 4, keepMonthly: 12, keepYearly: 2 }, 'UTC'))
  const days = Object.keys(result)
  t.same(days.filter((d) => result[d]?.includes('daily')), ['2025-01-30', '2025-01-31', '2025-02-01', '2025-02-02', '2025-02-03', '2025-02-04', '2025-02-05'])
  // ISO weeks: 2025-W06 (today), W05 ends Sunday 02-02, W04 ends 01-26, W03 ends 01-19.
  t.same(days.filter((d) => result[d]?.includes('weekly')), ['2025-01-19', '2025-01-26', '2025-02-02', '2025-02-05'])
  t.same(days.filter((d) => result[d]?.includes('monthly')), ['2024-03-31', '2024-04-30', '2024-05-31', '2024-06-30', '2024-07-31', '2024-08-31', '2024-09-30', '2024-10-31', '2024-11-30', '2024-12-31', '2025-01-31', '2025-02-05'])
  t.same(days.filter((d) => result[d]?.includes('yearly')), ['2024-12-31', '2025-02-05'])
  t.equal(days.length, 7 + 2 + 10, 'overlaps counted once: 7 daily, 2 more weekly, 10 more monthly (01-31 is a daily one), no more yearly')
})

const POLICY: RetentionPolicy = { retentionDays: 30, timezone: 'UTC', ...OFF }

t.test('decideRetention: kept when newest, younger than its expiry, or kept by GFS; everything else goes', async (t) => {
  const now = at('2024-06-01T00:00:00Z')
  const c = (id: string, created: string, expires: string | null) => ({ id, createdAt: at(created), expiresAt: expires === null ? null : at(expires) })
  const candidates = [
    c('old-1', '2024-03-01T00:00:00Z', '2024-03-31T00:00:00Z'),
    c('old-2', '2024-04-01T00:00:00Z', '2024-05-01T00:00:00Z'),
    c('young', '2024-05-20T00:00:00Z', '2024-06-19T00:00:00Z'),
    c('legacy', '2024-01-01T00:00:00Z', null),
    c('edge', '2024-05-02T00:00:00Z', '2024-06-01T00:00:00Z'),
  ]
  const verdicts = decideRetention(candidates, POLICY, now)
  t.same(verdicts.map((v) => v.id), ['young', 'edge', 'old-2', 'old-1', 'legacy'], 'newest first')
  t.same(Object.fromEntries(verdicts.map((v) => [v.id, v.reasons])), {
    young: ['newest', 'retentionDays'],
    edge: [], // expires exactly now: expired
    'old-2': [],
    'old-1': [],
    legacy: ['retentionDays'],
  })
  t.same(verdicts.filter((v) => !v.keep).map((v) => v.id), ['edge', 'old-2', 'old-1'])
})

t.test('decideRetention: the newest completed backup is never deleted, however old', async (t) => {
  const now = at('2030-01-01T00:00:00Z')
  const verdicts = decideRetention([
    { id: 'a', createdAt: at('2024-01-01T00:00:00Z'), expiresAt: at('2024-01-31T00:00:00Z') },
    { id: 'b', createdAt: at('2024-01-02T00:00:00Z'), expiresAt: at('2024-02-01T00:00:00Z') },
  ], POLICY, now)
  t.same(verdicts.map((v) => [v.id, v.keep, v.reasons]), [['b', true, ['newest']], ['a', false, []]])
  t.same(decideRetention([], POLICY, now), [])
})

t.test('decideRetention: retentionDays is a floor, GFS keeps older ones on top (union)', async (t) => {
  const now = at('2024-06-10T12:00:00Z')
  const candidates = Array.from({ length: 60 }, (_, i) => {
    const created = new Date(Date.UTC(2024, 5, 10, 2) - i * 86_400_000)
    return { id: created.toISOString().slice(0, 10), createdAt: created, expiresAt: new Date(created.getTime() + 7 * 86_400_000) }
  })
  const policy: RetentionPolicy = { ...POLICY, retentionDays: 7, keepWeekly: 4, keepMonthly: 2 }
  const verdicts = decideRetention(candidates, policy, now)
  const keep = verdicts.filter((v) => v.keep).map((v) => v.id)
  // 7 days of retention: 06-04..06-10 (06-03 expires 06-10 02:00, before now).
  t.same(keep.slice(0, 7), ['2024-06-10', '2024-06-09', '2024-06-08', '2024-06-07', '2024-06-06', '2024-06-05', '2024-06-04'])
  // Weeks: 06-10 (Mon, W24), Sundays 06-09 (W23), 06-02 (W22), 05-26 (W21); months: June (06-10), May (05-31).
  t.same(keep.slice(7), ['2024-06-02', '2024-05-31', '2024-05-26'])
  const byId = new Map(verdicts.map((v) => [v.id, v]))
  t.same(byId.get('2024-06-10')?.reasons, ['newest', 'retentionDays', 'weekly', 'monthly'])
  t.same(byId.get('2024-05-31')?.reasons, ['monthly'])
  t.equal(verdicts.filter((v) => !v.keep).length, 50)
  t.match(describeReasons(['newest', 'retentionDays', 'weekly'], policy), /newest completed backup.*retentionDays \(7\).*keepWeekly \(4\)/)
  t.match(deletionReason(policy), /older than retentionDays \(7\), not kept by keepDaily\/keepWeekly\/keepMonthly\/keepYearly \(0\/4\/2\/0\)/)
  t.equal(deletionReason(POLICY), 'older than retentionDays (30) and not the newest')
})
