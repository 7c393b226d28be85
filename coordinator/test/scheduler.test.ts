import t from 'tap'
import { sql } from 'drizzle-orm'
import { ERRORS } from '@cloudpilot/protocol'
import { inProcessCoordinator, STORE_KINDS } from './helpers/in-process.ts'
import { apiClient, type ApiClient } from './helpers/api-client.ts'

/**
 * The scheduler in the test process, against both stores, with a fake clock: slots are fired by calling the
 * scheduler the way node-cron's timers do, and the catch-up after an outage is run at a chosen "now". The real
 * timers, two replicas and real agents are covered by e2e/schedule-replicas.test.ts.
 */

async function enrollServer (url: string, api: ApiClient): Promise<string> {
  const token = (await api.post('/api/v1/enrollment-tokens', {})).body.token
  return (await apiClient(url, null).post('/api/v1/agents/enroll', { token })).body.serverId
}

const source = { engine: 'postgresql', host: '127.0.0.1', port: 5432, username: 'postgres', databases: ['x'] }

for (const store of STORE_KINDS) {
  t.test(`scheduler on ${store}`, async (t) => {
    let now = new Date('2032-02-29T10:02:00Z')
    const { coordinator, url, api } = await inProcessCoordinator(t, store, {}, { clock: () => now, scheduleTimers: false })
    const { scheduler } = coordinator.ctx
    const db = coordinator.database.db
    const serverId = await enrollServer(url, api)
    const rowsOf = async (planId: string): Promise<any[]> => (await api.get(`/api/v1/backups?planId=${planId}&limit=500`)).body.items

    t.test('plans created, changed and deleted through the API are (re)scheduled at once', async (t) => {
      const created = await api.post('/api/v1/plans', { name: 'nightly', serverId, type: 'database', source, schedule: '0 3 * * *', timezone: 'Asia/Tokyo' })
      t.equal(created.status, 201)
      const id = created.body.id
      t.same(scheduler.scheduled().get(id), { expression: '0 3 * * *', timezone: 'Asia/Tokyo' })
      t.equal(new Date(created.body.nextRunAt).getUTCHours(), 18, 'nextRunAt: 03:00 in Tokyo')
      const patched = await api.patch(`/api/v1/plans/${id}`, { schedule: '30 4 * * 1-5', timezone: 'UTC' })
      t.equal(patched.status, 200)
      t.same(scheduler.scheduled().get(id), { expression: '30 4 * * 1-5', timezone: 'UTC' })
      t.equal(new Date(patched.body.nextRunAt).getUTCMinutes(), 30)
      const unscheduled = await api.patch(`/api/v1/plans/${id}`, { schedule: null })
      t.equal(unscheduled.body.nextRunAt, null)
      t.notOk(scheduler.scheduled().has(id))
      await api.patch(`/api/v1/plans/${id}`, { schedule: '0 1 * * *' })
      t.ok(scheduler.scheduled().has(id))
      t.equal((await api.delete(`/api/v1/plans/${id}`)).status, 204)
      t.notOk(scheduler.scheduled().has(id), 'a deleted plan no longer fires')
      t.equal(await scheduler.fire(id, new Date('2032-02-29T01:00:00Z')), 'not-scheduled')
      const sixFields = await api.post('/api/v1/plans', { name: 's', serverId, type: 'database', source, schedule: '*/5 * * * * *' })
      t.equal(sixFields.status, 400, 'seconds are for tests only (CLOUDPILOT_SCHEDULE_SECONDS)')
      t.match(sixFields.body.error.message, /exactly 5 fields/)
    })

    t.test('a slot becomes one scheduled row, however many times it is fired', async (t) => {
      const plan = (await api.post('/api/v1/plans', { name: 'hourly', serverId, type: 'database', source, schedule: '0 * * * *' })).body
      const slot = new Date('2032-02-29T09:00:00Z')
      // Eight replicas handling the slot at the same moment (fireMany is what each replica's timers end up calling).
      const outcomes = await Promise.all(Array.from({ length: 8 }, async () => (await scheduler.fireMany(slot, [plan.id])).get(plan.id)))
      t.equal(outcomes.filter((o) => o === 'dispatched').length, 1, `one winner: ${outcomes.join(',')}`)
      t.equal(outcomes.filter((o) => o === 'taken').length, 7)
      t.equal(await scheduler.fire(plan.id, slot), 'taken', 'and later calls find it taken')
      const rows = await rowsOf(plan.id)
      t.equal(rows.length, 1)
      const row = rows[0]
      t.equal(row.trigger, 'scheduled')
      t.equal(row.scheduledFor, slot.toISOString())
      // The server's agent is not connected: a failed row, never a silent gap.
      t.equal(row.status, 'failed')
      t.equal(row.error.code, 'AGENT_LOST')
      t.match(row.error.hint, /POST \/api\/v1\/plans\/:id\/run/)
      // Manual runs keep working beside the schedule (no slot, so no conflict).
      const manual = await api.post(`/api/v1/plans/${plan.id}/run`)
      t.equal(manual.status, 201)
      t.equal(manual.body.trigger, 'manual')
      t.equal(manual.body.scheduledFor, null)
      t.equal((await rowsOf(plan.id)).length, 2)
    })

    t.test('a burst of plans due in the same second is handled together: one row per plan, none twice', async (t) => {
      const ids: string[] = []
      for (let i = 0; i < 60; i++) ids.push((await api.post('/api/v1/plans', { name: `burst ${i}`, serverId, type: 'database', source, schedule: '0 * * * *' })).body.id)
      const slot = new Date('2032-02-29T07:00:00Z')
      // Each plan fired twice, as by two replicas' timers.
      const outcomes = await Promise.all([...ids, ...ids].map(async (id) => await scheduler.fire(id, slot)))
      t.ok(outcomes.every((o) => o === 'dispatched' || o === 'taken'), outcomes.join(','))
      const rows = await db.execute(sql`select plan_id, count(*)::int as n from backups where scheduled_for = ${slot.toISOString()}::timestamptz group by plan_id`) as unknown as { rows?: Array<{ n: number }> } | Array<{ n: number }>
      const list = Array.isArray(rows) ? rows : rows.rows ?? []
      t.equal(list.length, 60, 'every plan has its row')
      t.ok(list.every((r) => r.n === 1), 'none twice')
    })

    t.test('a slot that overlaps a still running backup of the plan is recorded as skipped, not stacked', async (t) => {
      const plan = (await api.post('/api/v1/plans', { name: 'overlap', serverId, type: 'database', source, schedule: '0 * * * *' })).body
      const slot1 = new Date('2032-02-29T08:00:00Z')
      t.equal(await scheduler.fire(plan.id, slot1), 'dispatched')
      // Make the first run still going, as if its agent were busy with it.
      await db.execute(sql`update backups set status = 'in_progress', error = null, finished_at = null, started_at = now() where plan_id = ${plan.id}`)
      const slot2 = new Date('2032-02-29T09:00:00Z')
      t.equal(await scheduler.fire(plan.id, slot2), 'skipped-overlap')
      t.equal(await scheduler.fire(plan.id, slot2), 'taken', 'the skipped slot is recorded once')
      const rows = await rowsOf(plan.id)
      const skipped = rows.find((r) => r.scheduledFor === slot2.toISOString())
      t.equal(skipped.status, 'cancelled')
      t.equal(skipped.error.code, 'SKIPPED_OVERLAP')
      t.equal(skipped.error.hint, ERRORS.SKIPPED_OVERLAP.hint, 'a cancelled row keeps the documented hint (no retry advice: nothing failed)')
      t.match(skipped.error.message, new RegExp(`backup ${rows.find((r) => r.scheduledFor === slot1.toISOString()).id} of this plan .* was still in_progress`))
      t.equal(skipped.startedAt, null)
      t.ok(skipped.finishedAt)
      t.equal(rows.filter((r) => r.status === 'in_progress').length, 1, 'nothing stacked on the running backup')
      await db.execute(sql`update backups set status = 'completed', finished_at = now() where plan_id = ${plan.id} and status = 'in_progress'`)
      t.equal(await scheduler.fire(plan.id, new Date('2032-02-29T10:00:00Z')), 'dispatched', 'runs again once the previous run finished')
    })

    t.test('plans whose billing is not active do not fire (no row)', async (t) => {
      const plan = (await api.post('/api/v1/plans', { name: 'unpaid', serverId, type: 'database', source, schedule: '0 * * * *' })).body
      await db.execute(sql`update plans set billing_status = 'suspended' where id = ${plan.id}`)
      t.equal(await scheduler.fire(plan.id, new Date('2032-02-29T09:00:00Z')), 'billing-inactive')
      t.equal(await scheduler.recordMissed(plan.id, new Date('2032-02-29T10:00:00Z'), 'test'), 'billing-inactive')
      t.same(await rowsOf(plan.id), [])
      t.equal((await api.get(`/api/v1/plans/${plan.id}`)).body.nextRunAt, null, 'no next run while billing is not active')
      await db.execute(sql`update plans set billing_status = 'active' where id = ${plan.id}`)
      t.equal(await scheduler.fire(plan.id, new Date('2032-02-29T09:00:00Z')), 'dispatched')
    })

    t.test('plans of a deleted (revoked) server do not fire', async (t) => {
      const otherServer = await enrollServer(url, api)
      const plan = (await api.post('/api/v1/plans', { name: 'orphan', serverId: otherServer, type: 'database', source, schedule: '0 * * * *' })).body
      t.equal((await api.delete(`/api/v1/servers/${otherServer}`)).status, 204)
      t.equal(await scheduler.fire(plan.id, new Date('2032-02-29T09:00:00Z')), 'not-scheduled')
      t.same(await rowsOf(plan.id), [])
    })

    t.test('6-field (seconds) schedules left in the database are not honoured without the test option', async (t) => {
      const plan = (await api.post('/api/v1/plans', { name: 'seconds', serverId, type: 'database', source, schedule: '0 * * * *' })).body
      await db.execute(sql`update plans set schedule = '*/5 * * * * *' where id = ${plan.id}`)
      await scheduler.reload(plan.id)
      t.notOk(scheduler.scheduled().has(plan.id))
    })

    t.test('a scheduled run that cannot start is a failed row with the reason', async (t) => {
      const destination = (await api.post('/api/v1/destinations', { name: 'off', type: 's3', config: { bucket: 'b', region: 'us-east-1', endpoint: 'http://127.0.0.1:9' }, credentials: { accessKeyId: 'a', secretAccessKey: 'b' } })).body
      await api.patch(`/api/v1/destinations/${destination.id}`, { active: false })
      const plan = (await api.post('/api/v1/plans', { name: 'inactive dest', serverId, type: 'database', source, schedule: '0 * * * *', destinationId: destination.id })).body
      t.equal(await scheduler.fire(plan.id, new Date('2032-02-29T09:00:00Z')), 'failed')
      const [row] = await rowsOf(plan.id)
      t.equal(row.status, 'failed')
      t.equal(row.error.code, 'DESTINATION_INACTIVE')
      t.match(row.error.hint, new RegExp(`^${ERRORS.DESTINATION_INACTIVE.hint.replace(/[().]/g, '\\$&')} Failed runs are not retried automatically: run the plan again with POST /api/v1/plans/${plan.id}/run\\.$`))
    })

    t.test('catch-up: slots that passed while no coordinator ran are MISSED rows; the newest, barely late, still runs', async (t) => {
      const hourly = (await api.post('/api/v1/plans', { name: 'catch-up hourly', serverId, type: 'database', source, schedule: '0 * 29 2 *' })).body
      const minutely = (await api.post('/api/v1/plans', { name: 'catch-up minutely', serverId, type: 'database', source, schedule: '* * 29 2 *' })).body
      const recent = (await api.post('/api/v1/plans', { name: 'changed during', serverId, type: 'database', source, schedule: '0 * 29 2 *' })).body
      const unpaid = (await api.post('/api/v1/plans', { name: 'unpaid catch-up', serverId, type: 'database', source, schedule: '0 * 29 2 *' })).body
      // The plans existed long before the outage, except `recent`, changed at 08:30 (slots before its change are not its).
      await db.execute(sql`update plans set updated_at = '2032-02-28T00:00:00Z' where id in (${hourly.id}, ${minutely.id}, ${unpaid.id})`)
      await db.execute(sql`update plans set updated_at = '2032-02-29T08:30:00Z' where id = ${recent.id}`)
      await db.execute(sql`update plans set billing_status = 'failed' where id = ${unpaid.id}`)
      now = new Date('2032-02-29T10:02:00Z')
      const lastSeen = new Date('2032-02-29T05:30:00Z')
      const result = await scheduler.catchUp(lastSeen)

      const hourlyRows = (await rowsOf(hourly.id)).sort((a, b) => a.scheduledFor.localeCompare(b.scheduledFor))
      t.same(hourlyRows.map((r) => r.scheduledFor.slice(11, 16)), ['06:00', '07:00', '08:00', '09:00', '10:00'])
      for (const r of hourlyRows.slice(0, 4)) {
        t.equal(r.status, 'failed')
        t.equal(r.trigger, 'scheduled')
        t.equal(r.error.code, 'MISSED')
        t.match(r.error.message, /did not start: no coordinator was running \(the last one was seen at 2032-02-29T05:30:00.000Z\)/)
        t.match(r.error.hint, /POST \/api\/v1\/plans\/:id\/run/)
      }
      t.equal(hourlyRows[4].error.code, 'AGENT_LOST', '10:00 was 2 min late (< 5 min grace): it ran (its agent is offline here)')

      const minutelyRows = await rowsOf(minutely.id)
      const missed = minutelyRows.filter((r) => r.error.code === 'MISSED')
      t.equal(missed.length, 99, 'per plan at most 100 slots are recorded one by one (the newest ran)')
      t.equal(minutelyRows.length, 100)
      const oldest = missed.sort((a, b) => a.scheduledFor.localeCompare(b.scheduledFor))[0]
      t.match(oldest.error.message, /; 172 earlier slots since 2032-02-29T05:30:00.000Z were missed too and are not recorded one by one$/)

      t.same((await rowsOf(recent.id)).map((r) => r.scheduledFor.slice(11, 16)).sort(), ['09:00', '10:00'], 'only slots after the plan was changed')
      t.same(await rowsOf(unpaid.id), [], 'billing not active: no rows')
      // The plans of the subtests above are scheduled too (hourly, since "now" was moved years ahead): at least these.
      t.ok(result.ran >= 3 && result.missed >= 4 + 99 + 1, JSON.stringify(result))

      const again = await scheduler.catchUp(lastSeen)
      t.same(again, { ran: 0, missed: 0 }, 'a second catch-up (another replica starting) adds nothing')
      t.equal((await rowsOf(hourly.id)).length, 5)

      // Bounded look-back: a coordinator down for days only records the last 24 h (default).
      const longAgo = (await api.post('/api/v1/plans', { name: 'long outage', serverId, type: 'database', source, schedule: '0 */6 * * *' })).body
      await db.execute(sql`update plans set updated_at = '2032-01-01T00:00:00Z' where id = ${longAgo.id}`)
      await scheduler.catchUp(new Date('2032-02-20T00:00:00Z'))
      const longRows = (await rowsOf(longAgo.id)).map((r) => r.scheduledFor).sort()
      t.same(longRows, ['2032-02-28T12:00:00.000Z', '2032-02-28T18:00:00.000Z', '2032-02-29T00:00:00.000Z', '2032-02-29T06:00:00.000Z'], 'slots of the last 24 h only')
      t.equal(await scheduler.catchUp(null).then((r) => r.missed), 0, 'first start ever: nothing to catch up')
    })
  })
}
