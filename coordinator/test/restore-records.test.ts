import t from 'tap'
import { randomUUID } from 'node:crypto'
import { apiClient } from './helpers/api-client.ts'
import { inProcessCoordinator, STORE_KINDS } from './helpers/in-process.ts'
import { backups, restores } from '../src/db/schema.ts'
import type { JobStatusFrame } from '@cloudpilot/protocol'

function frame (jobId: string, status: JobStatusFrame['status'], extra: Partial<JobStatusFrame> = {}): JobStatusFrame {
  return { type: 'job.status', id: randomUUID().slice(0, 8), jobId, kind: 'restore', status, offsiteStatus: null, at: new Date().toISOString(), ...extra }
}

for (const store of STORE_KINDS) {
  t.test(`restore rows on ${store}`, async (t) => {
    const { coordinator, url, api } = await inProcessCoordinator(t, store)
    const ctx = coordinator.ctx
    const token = await api.post('/api/v1/enrollment-tokens', {})
    const { serverId } = (await apiClient(url, null).post('/api/v1/agents/enroll', { token: token.body.token })).body
    const otherToken = await api.post('/api/v1/enrollment-tokens', {})
    const other = (await apiClient(url, null).post('/api/v1/agents/enroll', { token: otherToken.body.token })).body.serverId
    const plan = await api.post('/api/v1/plans', { name: 'shop', serverId, type: 'database', source: { engine: 'postgresql', databases: ['shop'], password: 'never-returned' } })
    t.equal(plan.status, 201)
    const [backup] = await ctx.db.insert(backups).values({
      planId: plan.body.id, serverId, workspaceId: coordinator.admin.workspaceId, type: 'database', trigger: 'manual', status: 'completed',
      sizeBytes: 1234, sha256: 'a'.repeat(64), localPath: '/tmp/cloudpilot-backups/x/y.sql.gz', fileName: 'shop.sql.gz',
      details: { manifest: { engine: 'postgresql', databases: ['shop'], compression: 'gzip' } },
    }).returning()
    if (backup === undefined) throw new Error('no backup row')

    t.test('an offline target is refused with TARGET_UNREACHABLE and nothing is recorded', async (t) => {
      const r = await api.post(`/api/v1/backups/${backup.id}/restore`, { targetDatabase: 'shop_copy' })
      t.equal(r.status, 400)
      t.equal(r.body.error.code, 'TARGET_UNREACHABLE')
      t.same((await api.get(`/api/v1/restores?backupId=${backup.id}`)).body.items, [])
      const elsewhere = await api.post(`/api/v1/backups/${backup.id}/restore`, { targetServerId: other, targetDatabase: 'shop_copy' })
      t.equal(elsewhere.status, 409, 'a spool-only archive of another server is not reachable, whatever its agent')
      t.equal(elsewhere.body.error.code, 'ARCHIVE_NOT_REACHABLE')
    })

    t.test('status only moves forward, reports come from the target server only, a cancel keeps what may be partial', async (t) => {
      const insert = async () => {
        const [row] = await ctx.db.insert(restores).values({
          workspaceId: coordinator.admin.workspaceId, backupId: backup.id, targetServerId: serverId, parts: ['databases'],
          connection: { engine: 'postgresql' }, timeoutSeconds: 60, targetDatabase: 'shop_copy',
        }).returning()
        if (row === undefined) throw new Error('no restore row')
        return row
      }
      const row = await insert()
      t.equal(await ctx.restores.applyJobStatus(other, frame(row.id, 'in_progress')), 'unknown-job', 'another server may not report it')
      t.equal(await ctx.restores.applyJobStatus(serverId, frame(row.id, 'in_progress')), 'applied')
      t.equal(await ctx.restores.applyJobStatus(serverId, frame(row.id, 'pending')), 'stale', 'never back to pending')
      t.equal(await ctx.restores.applyJobStatus(serverId, frame(row.id, 'completed', { details: { restored: { databases: [] } } })), 'applied')
      t.equal(await ctx.restores.applyJobStatus(serverId, frame(row.id, 'failed', { error: { code: 'RESTORE_FAILED', message: 'late' } })), 'stale', 'a terminal status is final')
      const done = await api.get(`/api/v1/restores/${row.id}`)
      t.match(done.body, { status: 'completed', error: null, details: { restored: { databases: [] } } })
      t.ok(done.body.startedAt !== null && done.body.finishedAt !== null)
      t.notMatch(JSON.stringify(done.body), 'never-returned')

      const raced = await insert()
      const outcomes = await Promise.all([
        ctx.restores.applyJobStatus(serverId, frame(raced.id, 'completed')),
        ctx.restores.applyJobStatus(serverId, frame(raced.id, 'failed', { error: { code: 'RESTORE_FAILED', message: 'x' } })),
        ctx.restores.applyJobStatus(serverId, frame(raced.id, 'cancelled')),
      ])
      t.equal(outcomes.filter((o) => o === 'applied').length, 1, `exactly one terminal report wins (${outcomes.join(', ')})`)

      const cancelled = await insert()
      await ctx.restores.applyJobStatus(serverId, frame(cancelled.id, 'in_progress'))
      await ctx.restores.applyJobStatus(serverId, frame(cancelled.id, 'cancelled', { error: { code: 'CANCELLED', message: 'The restore was cancelled. The target database "shop_copy" may be partially written.', hint: 'To clean up: DROP DATABASE "shop_copy";' } }))
      const c = await api.get(`/api/v1/restores/${cancelled.id}`)
      t.equal(c.body.status, 'cancelled')
      t.match(c.body.error, { code: 'CANCELLED', message: /may be partially written/, hint: /DROP DATABASE/ })

      const lost = await insert()
      await ctx.restores.applyJobStatus(serverId, frame(lost.id, 'in_progress'))
      const failed = await ctx.restores.failOpenOfServers([serverId], { code: 'AGENT_LOST', message: 'no heartbeat.' })
      t.ok(failed.includes(lost.id))
      const l = await api.get(`/api/v1/restores/${lost.id}`)
      t.equal(l.body.error.code, 'AGENT_LOST')
      t.match(l.body.error.message, /may be partially written/, 'a running restore the coordinator gave up on says so')
      t.equal(await ctx.restores.applyJobStatus(serverId, frame(lost.id, 'completed')), 'applied', 'the agent\'s own later report that it finished wins over AGENT_LOST')
    })
  })
}
