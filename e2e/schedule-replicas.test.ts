import t from 'tap'
import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdir, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { startCoordinator, startAgent, waitOnline, waitBackup, tempDir, type CoordinatorProcess } from '../coordinator/test/helpers/processes.ts'
import { psql, tempPostgresDatabase } from '../coordinator/test/helpers/databases.ts'
import { waitFor } from '../coordinator/test/helpers/wait-for.ts'
import { s3, createS3Destination, createPlan } from './helpers.ts'

/**
 * Two real coordinator processes on one PostgreSQL database, one real agent connected to each. Schedules use the
 * test clock option CLOUDPILOT_SCHEDULE_SECONDS=1 (6-field cron, seconds first) so that slots come every few
 * seconds through node-cron's real timers; the full re-read of plans is set to an hour, so a plan change can only
 * reach the other replica through LISTEN/NOTIFY.
 */

const EVERY = 3 // seconds between slots

interface LogLine { msg?: string, planId?: string, slot?: string, backupId?: string }

async function logLines (c: CoordinatorProcess): Promise<LogLine[]> {
  return (await c.log()).split('\n').filter((l) => l.startsWith('{')).map((l) => { try { return JSON.parse(l) as LogLine } catch { return {} } })
}

async function scheduledRows (c: CoordinatorProcess, planId: string): Promise<any[]> {
  const r = await c.api.get(`/api/v1/backups?planId=${planId}&limit=500`)
  return (r.body.items as any[]).filter((b) => b.trigger === 'scheduled').sort((a, b) => a.scheduledFor.localeCompare(b.scheduledFor))
}

t.test('two coordinator replicas on one PostgreSQL: each slot runs exactly once, commands reach agents on either replica', async (t) => {
  const store = await tempPostgresDatabase(t, 'cp_replicas')
  const env = {
    CLOUDPILOT_MASTER_KEY: randomBytes(32).toString('hex'),
    CLOUDPILOT_SCHEDULE_SECONDS: '1',
    CLOUDPILOT_SCHEDULE_RESYNC_SECONDS: '3600',
    CLOUDPILOT_SCHEDULE_LATE_GRACE_SECONDS: '2',
    LOG_LEVEL: 'debug',
  }
  const c1 = await startCoordinator(t, { databaseUrl: store.url, env: { ...env, CLOUDPILOT_RETENTION_SWEEP_SECONDS: '1' } })
  // c2 never sweeps during the test: retention on c1 must reach c2's agent through NOTIFY.
  const c2 = await startCoordinator(t, { databaseUrl: store.url, env: { ...env, CLOUDPILOT_RETENTION_SWEEP_SECONDS: '3600' } })
  const agentA = await startAgent(t, c1)
  const agentB = await startAgent(t, c2)
  await waitOnline(c1, agentA.serverId)
  await waitOnline(c1, agentB.serverId)
  const db = await tempPostgresDatabase(t, 'cp_src')
  await psql(db.name, 'create table t (id int primary key, v text); insert into t select g, md5(g::text) from generate_series(1, 500) g;')
  const source = { engine: 'postgresql', host: '127.0.0.1', port: 5432, username: 'postgres', databases: [db.name] }

  // Each plan is created through the replica that does NOT hold its agent.
  const planA = await createPlan(c2, { serverId: agentA.serverId, type: 'database', source, schedule: `*/${EVERY} * * * * *` })
  const planB = await createPlan(c1, { serverId: agentB.serverId, type: 'database', source, schedule: `*/${EVERY} * * * * *` })
  const createdAt = Date.now()

  t.test('every slot has exactly one row, and both replicas fired every slot', async (t) => {
    const enough = 6
    for (const planId of [planA, planB]) {
      await waitFor(`${enough} finished scheduled runs of ${planId}`, async () => (await scheduledRows(c1, planId)).filter((r) => ['completed', 'failed', 'cancelled'].includes(r.status)).length >= enough, 60_000, 250)
    }
    for (const [name, planId] of [['A (agent on c1, created via c2)', planA], ['B (agent on c2, created via c1)', planB]] as const) {
      const rows = await scheduledRows(c1, planId)
      const slots = rows.map((r) => new Date(r.scheduledFor).getTime())
      t.equal(new Set(slots).size, slots.length, `${name}: one row per slot`)
      for (let i = 1; i < slots.length; i++) t.equal((slots[i] as number) - (slots[i - 1] as number), EVERY * 1000, `${name}: no slot skipped between ${rows[i - 1].scheduledFor} and ${rows[i].scheduledFor}`)
      const finished = rows.filter((r) => r.status !== 'pending' && r.status !== 'in_progress')
      for (const r of finished) {
        // A run is a few hundred ms; on a loaded machine one may still be going at the next slot: then it is skipped, not stacked.
        t.ok(r.status === 'completed' || (r.status === 'cancelled' && r.error?.code === 'SKIPPED_OVERLAP'), `${name} ${r.scheduledFor}: ${r.status} ${JSON.stringify(r.error)}`)
      }
      t.ok(finished.filter((r) => r.status === 'completed').length >= enough - 2, `${name}: runs completed (forwarded to the agent's replica when the other one won)`)
      t.ok(rows.every((r) => r.scheduledFor.endsWith(':00.000Z') || Number(r.scheduledFor.slice(17, 19)) % EVERY === 0), 'slots on the cron grid')

      // Both replicas tried each slot (after both had the plan): one inserted, the other found it taken.
      const seen = new Map<string, Set<string>>()
      for (const [replica, c] of [['c1', c1], ['c2', c2]] as const) {
        for (const line of await logLines(c)) {
          if (line.planId !== planId || line.slot === undefined) continue
          if (!['scheduled run fired', 'slot already taken', 'scheduled run skipped: the previous run is still going'].includes(line.msg ?? '')) continue
          const set = seen.get(line.slot) ?? new Set<string>()
          set.add(`${replica}:${line.msg === 'slot already taken' ? 'lost' : 'won'}`)
          seen.set(line.slot, set)
        }
      }
      const settled = rows.filter((r) => new Date(r.scheduledFor).getTime() > createdAt + 1000)
      t.ok(settled.length >= enough - 2)
      for (const r of settled) {
        const who = [...(seen.get(r.scheduledFor) ?? [])].sort()
        t.ok(who.length === 2 && who.filter((w) => w.endsWith(':won')).length === 1 && who.some((w) => w.startsWith('c1')) && who.some((w) => w.startsWith('c2')),
          `${name} ${r.scheduledFor}: both replicas fired, exactly one won (${who.join(', ')})`)
      }
    }
  })

  t.test('a manual run and a cancel sent through the replica without the agent reach it (NOTIFY)', async (t) => {
    const manual = await c1.api.post(`/api/v1/plans/${planB}/run`)
    t.equal(manual.status, 201)
    t.equal(manual.body.status, 'pending', 'not AGENT_LOST: the agent is connected to the other replica')
    const done = await waitBackup(c1, manual.body.id, ['completed', 'failed', 'cancelled'], 30_000)
    t.equal(done.status, 'completed', JSON.stringify(done.error))

    // A slow backup (rate-limited upload of incompressible data) of agent B, cancelled through c1.
    const bucket = await s3(t)
    const dir = await tempDir(t, 'cp-slow')
    await mkdir(path.join(dir, 'data'))
    await writeFile(path.join(dir, 'data', 'random.bin'), randomBytes(6 * 1024 * 1024))
    const destinationId = await createS3Destination(c1, bucket, { config: { rateLimitBytesPerSecond: 256 * 1024 } })
    const slow = await createPlan(c1, { serverId: agentB.serverId, type: 'files', source: { paths: [path.join(dir, 'data')] }, destinationId, compression: 'none' })
    const run = await c1.api.post(`/api/v1/plans/${slow}/run`)
    await waitFor('slow backup running', async () => (await c1.api.get(`/api/v1/backups/${run.body.id}`)).body.status === 'in_progress', 30_000, 100)
    const cancel = await c1.api.post(`/api/v1/backups/${run.body.id}/cancel`)
    t.equal(cancel.status, 202)
    t.equal(cancel.body.status, 'in_progress', 'still running until the agent confirms it stopped')
    const cancelled = await waitBackup(c1, run.body.id, ['completed', 'failed', 'cancelled'], 20_000)
    t.equal(cancelled.status, 'cancelled', 'the agent on c2 got the job.cancel sent through c1')
    t.equal(cancelled.offsiteStatus, 'failed', 'the upload under way was aborted')
    t.ok((await agentB.log()).split('\n').some((l) => l.includes(run.body.id) && l.includes('backup cancelled')), 'agent B stopped the job itself')
  })

  t.test('retention on one replica deletes the spool copy held by the other replica\'s agent', async (t) => {
    const rows = (await scheduledRows(c1, planB)).filter((r) => r.status === 'completed')
    const old = rows[0]
    t.ok(existsSync(old.localPath), 'the spool copy exists on the server')
    // Age it: it expired a day ago, and it is not the newest of the plan.
    await psql(store.name, `update backups set expires_at = now() - interval '1 day' where id = '${old.id}'`)
    const expired = await waitFor('the old backup expired', async () => {
      const b = (await c1.api.get(`/api/v1/backups/${old.id}`)).body
      return b.expiredAt !== null ? b : undefined
    }, 20_000, 200)
    t.match(expired.deletion, { object: null, localCopy: 'deleted', lastError: null })
    t.notOk(existsSync(old.localPath), 'spool copy removed by agent B, asked by c1 through c2')
    t.notOk(existsSync(`${old.localPath}.manifest.json`), 'with its manifest')
    t.ok(existsSync(rows.at(-1).localPath), 'the other copies stay')
  })

  t.test('a plan change made through one replica reaches the other at once (NOTIFY)', async (t) => {
    const patched = await c2.api.patch(`/api/v1/plans/${planB}`, { schedule: null })
    t.equal(patched.status, 200)
    const changedAt = Date.now()
    await new Promise((resolve) => setTimeout(resolve, (EVERY * 2 + 1) * 1000))
    const later = (await scheduledRows(c1, planB)).filter((r) => new Date(r.scheduledFor).getTime() > changedAt + 1000)
    t.same(later, [], 'c1 (which created the plan) stopped firing it too')
  })

  t.test('slots that passed while every replica was down become MISSED rows at the next start', async (t) => {
    await c1.stop()
    await c2.stop()
    const downFrom = Date.now()
    await new Promise((resolve) => setTimeout(resolve, 4 * EVERY * 1000))
    const downUntil = Date.now()
    await c1.restart()
    const rows = await waitFor('the catch-up rows', async () => {
      const all = await scheduledRows(c1, planA)
      const during = all.filter((r) => new Date(r.scheduledFor).getTime() > downFrom + 500 && new Date(r.scheduledFor).getTime() < downUntil - 500)
      return during.length >= 3 ? during : undefined
    }, 20_000, 250)
    const slots = rows.map((r) => new Date(r.scheduledFor).getTime())
    for (let i = 1; i < slots.length; i++) t.equal((slots[i] as number) - (slots[i - 1] as number), EVERY * 1000, 'every slot of the outage has its row')
    for (const r of rows.slice(0, -1)) {
      t.equal(r.status, 'failed')
      t.equal(r.error.code, 'MISSED')
      t.match(r.error.message, /no coordinator was running/)
      t.match(r.error.hint, /POST \/api\/v1\/plans\/:id\/run/)
    }
    // Slots keep firing on the restarted replica.
    await waitFor('a scheduled run after the restart', async () => (await scheduledRows(c1, planA)).some((r) => new Date(r.scheduledFor).getTime() > downUntil + 2000 && r.status === 'completed'), 30_000, 250)
  })
})
