import t from 'tap'
import { SlotMatcher, nextSlot, scheduleProblem } from '../src/services/cron-slots.ts'

/** Every slot in (after, until] by asking node-cron about each minute (or second): the slow, obvious way. */
function bruteForce (matcher: SlotMatcher, after: Date, until: Date, stepMs: number): Date[] {
  const out: Date[] = []
  for (let t = Math.floor(after.getTime() / stepMs) * stepMs + stepMs; t <= until.getTime(); t += stepMs) {
    if (matcher.match(new Date(t))) out.push(new Date(t))
  }
  return out
}

t.test('schedules: 5 fields; 6 (seconds first) only when allowed', async (t) => {
  t.equal(scheduleProblem('0 3 * * *', false), null)
  t.equal(scheduleProblem('*/15 2-4 * * 1-5', false), null)
  t.match(scheduleProblem('*/5 * * * * *', false), /exactly 5 fields/)
  t.equal(scheduleProblem('*/5 * * * * *', true), null)
  t.match(scheduleProblem('0 3 * *', true), /5 fields .* or 6/)
  t.match(scheduleProblem('61 3 * * *', false), /not a valid cron expression/)
  t.match(scheduleProblem('0 25 * * *', false), /hour/)
})

t.test('slotsBetween finds exactly the slots node-cron matches, in zones with whole, half and quarter hour offsets', async (t) => {
  const cases: Array<[string, string]> = [
    ['0 3 * * *', 'UTC'],
    ['30 2 * * *', 'Europe/Berlin'], // includes the spring-forward night (2:30 does not exist on 2024-03-31)
    ['15 1 * * *', 'America/New_York'], // includes the fall-back night (1:15 happens twice on 2024-11-03)
    ['0 9 * * 1-5', 'Asia/Kolkata'], // UTC+05:30
    ['45 23 * * *', 'Asia/Kathmandu'], // UTC+05:45
    ['*/20 * * * *', 'Australia/Adelaide'], // UTC+09:30/+10:30
    ['0 0 1 * *', 'Pacific/Chatham'], // UTC+12:45/+13:45
  ]
  const windows: Array<[string, string]> = [['2024-03-29T00:00:00Z', '2024-04-02T00:00:00Z'], ['2024-11-01T00:00:00Z', '2024-11-05T00:00:00Z'], ['2024-12-30T12:00:00Z', '2025-01-02T12:00:00Z']]
  for (const [expression, zone] of cases) {
    const matcher = new SlotMatcher(expression, zone)
    t.teardown(() => matcher.close())
    for (const [from, to] of windows) {
      const after = new Date(from)
      const until = new Date(to)
      const expected = bruteForce(matcher, after, until, 60_000)
      const { slots, total } = matcher.slotsBetween(after, until, 10_000)
      t.same(slots.map((d) => d.toISOString()), expected.map((d) => d.toISOString()), `${expression} ${zone} ${from}`)
      t.equal(total, expected.length)
    }
  }
})

t.test('slotsBetween: the interval is (after, until], and only the latest `limit` slots are returned', async (t) => {
  const matcher = new SlotMatcher('0 * * * *', 'UTC')
  t.teardown(() => matcher.close())
  const r = matcher.slotsBetween(new Date('2024-05-01T00:00:00Z'), new Date('2024-05-01T05:00:00Z'), 3)
  t.same(r.slots.map((d) => d.toISOString()), ['2024-05-01T03:00:00.000Z', '2024-05-01T04:00:00.000Z', '2024-05-01T05:00:00.000Z'])
  t.equal(r.total, 5, '01:00 to 05:00: the slot at `after` itself is not included')
  t.same(matcher.slotsBetween(new Date('2024-05-01T00:00:00Z'), new Date('2024-05-01T00:59:59Z'), 10), { slots: [], total: 0 })
})

t.test('slotsBetween with a 6-field (seconds) expression steps by seconds', async (t) => {
  const matcher = new SlotMatcher('*/7 * * * * *', 'Asia/Kolkata')
  t.teardown(() => matcher.close())
  const after = new Date('2024-05-01T10:00:00Z')
  const until = new Date('2024-05-01T10:05:00Z')
  const expected = bruteForce(matcher, after, until, 1000)
  const { slots } = matcher.slotsBetween(after, until, 10_000)
  t.same(slots.map((d) => d.toISOString()), expected.map((d) => d.toISOString()))
  t.equal(slots.length, 5 * 9, 'seconds 0,7,...,56 of every minute')
})

t.test('nextSlot is the next firing in the plan\'s time zone', async (t) => {
  const next = nextSlot('0 3 * * *', 'Asia/Tokyo')
  t.ok(next !== null && next.getTime() > Date.now() && next.getTime() <= Date.now() + 86_400_000)
  t.equal(next?.getUTCHours(), 18, '03:00 in Tokyo is 18:00 UTC')
  t.equal(next?.getUTCMinutes(), 0)
})
