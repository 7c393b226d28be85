import t from 'tap'
import { createHash, randomUUID } from 'node:crypto'
import { Readable } from 'node:stream'
import { eq, sql } from 'drizzle-orm'
import WebSocket from 'ws'
import { once } from 'node:events'
import { DAY, MINUTE, PROTOCOL_VERSION, backupObjectKey, manifestKey } from '@cloudpilot/protocol'
import { openDestination, type StorageDriver } from '@cloudpilot/storage'
import { inProcessCoordinator, STORE_KINDS } from './helpers/in-process.ts'
import { apiClient, type ApiClient } from './helpers/api-client.ts'
import { waitFor } from './helpers/wait-for.ts'
import { startS3rver } from '../../storage/test/helpers/s3rver.ts'
import { backups, plans } from '../src/db/schema.ts'
import { releaseLease, tryLease } from '../src/services/leases.ts'

/**
 * The retention sweeper in the test process with a fake clock, against both stores and a real S3 (s3rver): the
 * history a plan would have after months of backups is written as rows plus real objects and manifests in the
 * bucket, then swept at chosen times. The agent's side (spool copies, local destinations) and real processes
 * are covered by e2e/retention.test.ts.
 */

async function enrollServer (url: string, api: ApiClient): Promise<string> {
  const token = (await api.post('/api/v1/enrollment-tokens', {})).body.token
  return (await apiClient(url, null).post('/api/v1/agents/enroll', { token })).body.serverId
}

const source = { engine: 'postgresql', host: '127.0.0.1', port: 5432, username: 'postgres', databases: ['x'] }

for (const store of STORE_KINDS) {
  t.test(`retention on ${store}`, async (t) => {
    const s3 = await startS3rver()
    t.teardown(() => s3.close())
    let now = new Date('2031-06-15T12:00:00Z')
    const { coordinator, url, api } = await inProcessCoordinator(t, store, {}, { clock: () => now, scheduleTimers: false })
    const { retention } = coordinator.ctx
    const db = coordinator.database.db
    const serverId = await enrollServer(url, api)
    const destination = (await api.post('/api/v1/destinations', {
      name: 's3', type: 's3', config: { bucket: s3.bucket, region: s3.region, endpoint: s3.endpoint, forcePathStyle: true },
      credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
    })).body
    const driver: StorageDriver = await openDestination({ type: 's3', config: { bucket: s3.bucket, region: s3.region, endpoint: s3.endpoint, forcePathStyle: true }, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } }, { allowPrivateEndpoints: true })
    t.teardown(() => driver.close())

    async function newPlan (body: Record<string, unknown>): Promise<{ id: string, retentionDays: number }> {
      const r = await api.post('/api/v1/plans', { name: `p-${randomUUID().slice(0, 6)}`, serverId, type: 'database', source, destinationId: destination.id, ...body })
      if (r.status !== 201) throw new Error(JSON.stringify(r.body))
      return r.body
    }

    /** A completed backup made at `createdAt`, as the agent would have left it: row, object and manifest. */
    async function pastBackup (plan: { id: string, retentionDays: number }, createdAt: Date, options: { localPath?: string } = {}): Promise<{ id: string, objectKey: string }> {
      const id = randomUUID()
      const body = Buffer.from(`dump of ${id}\n`)
      const objectKey = backupObjectKey({ serverId, planId: plan.id, backupId: id, createdAt, extension: '.sql.gz' })
      await driver.put(objectKey, Readable.from([body]))
      await driver.put(manifestKey(objectKey), Readable.from([Buffer.from('{}')]))
      const [p] = await db.select().from(plans).where(eq(plans.id, plan.id))
      const finishedAt = new Date(createdAt.getTime() + MINUTE)
      await db.insert(backups).values({
        id, planId: plan.id, serverId, workspaceId: p?.workspaceId as string, destinationId: destination.id, type: 'database', trigger: 'scheduled',
        status: 'completed', offsiteStatus: 'uploaded', sizeBytes: body.length, sha256: createHash('sha256').update(body).digest('hex'),
        objectKey, localPath: options.localPath ?? null, fileName: `x-${id}.sql.gz`, createdAt, startedAt: createdAt, finishedAt,
        expiresAt: new Date(finishedAt.getTime() + (p?.retentionDays ?? 30) * DAY), scheduledFor: createdAt,
      })
      return { id, objectKey }
    }
    const exists = async (key: string): Promise<boolean> => (await driver.stat(key)) !== null
    const daysAgo = (n: number): Date => new Date(now.getTime() - n * DAY)

    t.test('expired backups are deleted from the destination and shown as expired; the newest always stays', async (t) => {
      const plan = await newPlan({ retentionDays: 30 })
      const old1 = await pastBackup(plan, daysAgo(40))
      const old2 = await pastBackup(plan, daysAgo(35))
      const young = await pastBackup(plan, daysAgo(1))
      const report = await retention.sweep()
      t.match(report, { selected: 2, deletedByCoordinator: 2, failed: 0 })
      for (const b of [old1, old2]) {
        t.notOk(await exists(b.objectKey), 'object deleted')
        t.notOk(await exists(manifestKey(b.objectKey)), 'its manifest too')
        const row = (await api.get(`/api/v1/backups/${b.id}`)).body
        t.equal(row.status, 'completed', 'the status vocabulary is unchanged')
        t.equal(row.expiredAt, now.toISOString())
        t.match(row.deletion, { reason: 'older than retentionDays (30) and not the newest', object: 'deleted', localCopy: null, attempts: 0, lastError: null })
        const download = await api.get(`/api/v1/backups/${b.id}/download`)
        t.equal(download.status, 404)
        t.equal(download.body.error.code, 'OBJECT_NOT_FOUND')
        t.match(download.body.error.message, /deleted by retention/)
      }
      t.ok(await exists(young.objectKey))
      t.equal((await api.get(`/api/v1/backups/${young.id}`)).body.expiredAt, null)
      t.same((await api.get(`/api/v1/backups?planId=${plan.id}&expired=true`)).body.items.map((b: any) => b.id).sort(), [old1.id, old2.id].sort())
      t.same((await api.get(`/api/v1/backups?planId=${plan.id}&expired=false`)).body.items.map((b: any) => b.id), [young.id])

      // Months later, the young one has expired too, but it is the newest completed backup: it stays.
      now = new Date(now.getTime() + 90 * DAY)
      t.match(await retention.sweep(), { selected: 0 })
      t.ok(await exists(young.objectKey), 'the newest completed backup is never deleted')
      const preview = (await api.get(`/api/v1/plans/${plan.id}/retention-preview`)).body
      t.same(preview.delete, [])
      t.match(preview.keep, [{ backupId: young.id, reasons: ['newest'], why: /newest completed backup/ }])
      now = new Date('2031-06-15T12:00:00Z')
    })

    t.test('changing retentionDays moves expiresAt of the backups retention has not taken', async (t) => {
      const plan = await newPlan({ retentionDays: 30 })
      const b = await pastBackup(plan, daysAgo(10))
      await pastBackup(plan, daysAgo(1))
      const before = (await api.get(`/api/v1/backups/${b.id}`)).body
      await api.patch(`/api/v1/plans/${plan.id}`, { retentionDays: 5 })
      const after = (await api.get(`/api/v1/backups/${b.id}`)).body
      t.equal(new Date(before.expiresAt).getTime() - new Date(after.expiresAt).getTime(), 25 * DAY)
      t.equal(new Date(after.expiresAt).getTime() - new Date(after.finishedAt).getTime(), 5 * DAY)
      t.match(await retention.sweep(), { selected: 1 })
      t.notOk(await exists(b.objectKey))
    })

    t.test('GFS: the preview says what goes and why the rest stays; the sweep deletes exactly that', async (t) => {
      const plan = await newPlan({ retentionDays: 1, keepDaily: 7, keepWeekly: 4, keepMonthly: 3 })
      const made = []
      // A backup every day at 02:00 UTC for 120 days (2031-02-16 .. 2031-06-15).
      for (let i = 119; i >= 0; i--) {
        const day = new Date(Date.UTC(2031, 5, 15, 2) - i * DAY)
        made.push({ ...(await pastBackup(plan, day)), day: day.toISOString().slice(0, 10) })
      }
      const preview = (await api.get(`/api/v1/plans/${plan.id}/retention-preview`)).body
      t.same(preview.policy, { retentionDays: 1, keepDaily: 7, keepWeekly: 4, keepMonthly: 3, keepYearly: null, timezone: 'UTC' })
      const dayOf = new Map(made.map((m) => [m.id, m.day]))
      const keptDays = preview.keep.map((k: any) => dayOf.get(k.backupId))
      // Daily: 06-09..06-15; weekly (ISO, Sunday ends a week): 06-15 (Sun), 06-08, 06-01, 05-25; monthly: June, May 31, Apr 30.
      t.same(keptDays, ['2031-06-15', '2031-06-14', '2031-06-13', '2031-06-12', '2031-06-11', '2031-06-10', '2031-06-09', '2031-06-08', '2031-06-01', '2031-05-31', '2031-05-25', '2031-04-30'])
      t.same(preview.keep[0].reasons, ['newest', 'retentionDays', 'daily', 'weekly', 'monthly'])
      t.same(preview.keep.find((k: any) => dayOf.get(k.backupId) === '2031-04-30').reasons, ['monthly'])
      t.match(preview.keep.find((k: any) => dayOf.get(k.backupId) === '2031-05-25').why, 'keepWeekly (4)')
      t.equal(preview.delete.length, 120 - 12)
      t.match(preview.delete[0].reason, /not kept by keepDaily\/keepWeekly\/keepMonthly\/keepYearly \(7\/4\/3\/0\)/)

      const report = await retention.sweep()
      t.match(report, { selected: 108, deletedByCoordinator: 108, failed: 0 })
      const deleted = new Set(preview.delete.map((d: any) => d.backupId))
      for (const m of made) t.equal(await exists(m.objectKey), !deleted.has(m.id), `${m.day} ${deleted.has(m.id) ? 'deleted' : 'kept'}`)
      const after = (await api.get(`/api/v1/plans/${plan.id}/retention-preview`)).body
      t.same(after.delete, [], 'nothing more to delete')
      t.equal(after.keep.length, 12)

      // The next day (Monday 06-16, a new ISO week) the daily of 06-09 rolls off and so does the weekly of 05-25.
      now = new Date(now.getTime() + DAY)
      const monday = await pastBackup(plan, new Date(Date.UTC(2031, 5, 16, 2)))
      dayOf.set(monday.id, '2031-06-16')
      const next = (await api.get(`/api/v1/plans/${plan.id}/retention-preview`)).body
      t.same(next.delete.map((d: any) => dayOf.get(d.backupId)), ['2031-06-09', '2031-05-25'])
      t.match(await retention.sweep(), { selected: 2, deletedByCoordinator: 2 })
      now = new Date('2031-06-15T12:00:00Z')
    })

    t.test('a deletion that fails is visible on the row and retried on the next sweep', async (t) => {
      const plan = await newPlan({ retentionDays: 30 })
      const old = await pastBackup(plan, daysAgo(60))
      await pastBackup(plan, daysAgo(1))
      s3.fault = (req) => req.method === 'DELETE' ? { status: 403, code: 'AccessDenied', message: 'no delete for you' } : undefined
      t.teardown(() => { s3.fault = undefined })
      t.match(await retention.sweep(), { selected: 1, deletedByCoordinator: 0, failed: 1 })
      let row = (await api.get(`/api/v1/backups/${old.id}`)).body
      t.equal(row.expiredAt, null)
      t.match(row.deletion, { object: 'pending', attempts: 1, lastAttemptAt: now.toISOString(), lastError: { code: 'AUTH_FAILED', message: new RegExp(`deleting ${old.objectKey} from destination "s3"`) } })
      t.ok(await exists(old.objectKey))
      const preview = (await api.get(`/api/v1/plans/${plan.id}/retention-preview`)).body
      t.match(preview.deleting, [{ backupId: old.id, lastError: { code: 'AUTH_FAILED' } }])
      t.equal((await api.get(`/api/v1/backups/${old.id}/download`)).body.error.code, 'OBJECT_NOT_FOUND', 'not offered for download while being deleted')
      t.match(await retention.sweep(), { failed: 1 })
      t.equal((await api.get(`/api/v1/backups/${old.id}`)).body.deletion.attempts, 2)
      s3.fault = undefined
      t.match(await retention.sweep(), { deletedByCoordinator: 1, failed: 0 })
      row = (await api.get(`/api/v1/backups/${old.id}`)).body
      t.equal(row.expiredAt, now.toISOString())
      t.match(row.deletion, { object: 'deleted', lastError: null })
      t.notOk(await exists(old.objectKey))
    })

    t.test('one replica sweeps at a time (lease row); a dead holder\'s lease expires', async (t) => {
      const plan = await newPlan({ retentionDays: 30 })
      const old = await pastBackup(plan, daysAgo(60))
      await pastBackup(plan, daysAgo(1))
      t.ok(await tryLease(db, 'retention-sweep', 'another-replica', 60_000))
      t.equal(await retention.sweep(), null, 'another replica is sweeping')
      t.ok(await exists(old.objectKey))
      t.equal((await api.get(`/api/v1/backups/${old.id}`)).body.deletion, null)
      await releaseLease(db, 'retention-sweep', 'another-replica')
      t.ok(await tryLease(db, 'retention-sweep', 'a-dead-replica', 1))
      await new Promise((resolve) => setTimeout(resolve, 20))
      t.match(await retention.sweep(), { selected: 1 }, 'the lease of a holder that died expired')
      t.notOk(await exists(old.objectKey))
      const leaseRows = await db.execute(sql`select holder from leases`) as unknown as { rows?: unknown[] } | unknown[]
      t.same(Array.isArray(leaseRows) ? leaseRows : leaseRows.rows, [], 'released after the sweep')
    })
    t.test('the agent\'s answers: a copy it could not delete, or a request it cannot take, show on the row', async (t) => {
      const plan = await newPlan({ retentionDays: 30, keepLocal: true })
      const old = await pastBackup(plan, daysAgo(60), { localPath: `/tmp/cloudpilot-backups/${serverId}/${randomUUID()}.sql.gz` })
      await pastBackup(plan, daysAgo(1))
      // A raw protocol peer holding the server's credential plays the agent.
      const token = (await api.post('/api/v1/enrollment-tokens', {})).body.token
      const agentServer = (await apiClient(url, null).post('/api/v1/agents/enroll', { token })).body
      await db.execute(sql`update plans set server_id = ${agentServer.serverId} where id = ${plan.id}`)
      await db.execute(sql`update backups set server_id = ${agentServer.serverId} where plan_id = ${plan.id}`)
      const ws = new WebSocket(`${url.replace('http', 'ws')}/agent/ws`, { headers: { authorization: `Bearer ${agentServer.agentCredential as string}` } })
      t.teardown(() => ws.terminate())
      const requests: any[] = []
      let answer: (frame: any) => object | null = () => null
      ws.on('message', (data: Buffer) => {
        const frame = JSON.parse(data.toString())
        if (frame.type !== 'backup.delete') return
        requests.push(frame)
        const reply = answer(frame)
        if (reply !== null) ws.send(JSON.stringify(reply))
      })
      await once(ws, 'open')
      ws.send(JSON.stringify({ type: 'hello', id: 'h1', protocolVersion: PROTOCOL_VERSION, agentVersion: '0.1.0', hostname: 'h', os: 'linux', arch: 'x64', tools: {}, runningJobs: [] }))
      await waitFor('agent ready', async () => coordinator.ctx.hub.isConnected(agentServer.serverId))

      answer = (f) => ({ type: 'backup.delete.result', id: 'r1', requestId: f.id, backupId: f.backupId, localCopy: { ok: false, error: { code: 'PERMISSION_DENIED', message: 'EACCES' } }, object: null })
      t.match(await retention.sweep(), { selected: 1, deletedByCoordinator: 1, requestedFromAgents: 1 })
      const request = await waitFor('the backup.delete frame', async () => requests[0])
      t.match(request, { type: 'backup.delete', id: `del-${old.id}`, backupId: old.id, objectKey: null, destination: null })
      t.match(request.localPath, new RegExp(`${serverId}/`))
      let row = await waitFor('the refusal recorded', async () => {
        const b = (await api.get(`/api/v1/backups/${old.id}`)).body
        return b.deletion.lastError !== null ? b : undefined
      })
      t.match(row.deletion, { object: 'deleted', localCopy: 'pending', lastError: { code: 'PERMISSION_DENIED', message: 'spool copy on the server: EACCES' } })

      answer = (f) => ({ type: 'error', id: 'e1', refId: f.id, code: 'FRAME_UNKNOWN_TYPE', message: 'unknown frame type "backup.delete"' })
      await retention.sweep()
      row = await waitFor('the protocol error recorded', async () => {
        const b = (await api.get(`/api/v1/backups/${old.id}`)).body
        return b.deletion.lastError?.code === 'UNSUPPORTED' ? b : undefined
      })
      t.match(row.deletion.lastError.message, /FRAME_UNKNOWN_TYPE/)

      answer = (f) => ({ type: 'backup.delete.result', id: 'r2', requestId: f.id, backupId: f.backupId, localCopy: { ok: true }, object: null })
      await retention.sweep()
      row = await waitFor('expired', async () => {
        const b = (await api.get(`/api/v1/backups/${old.id}`)).body
        return b.expiredAt !== null ? b : undefined
      })
      t.match(row.deletion, { object: 'deleted', localCopy: 'deleted', lastError: null, attempts: 3 })
    })

    // Last: it revokes the server.
    t.test('the spool copy waits for its agent; once the server is revoked it is marked lost', async (t) => {
      const plan = await newPlan({ retentionDays: 30, keepLocal: true })
      const old = await pastBackup(plan, daysAgo(60), { localPath: `/tmp/cloudpilot-backups/${serverId}/x.sql.gz` })
      await pastBackup(plan, daysAgo(1))
      t.match(await retention.sweep(), { selected: 1, deletedByCoordinator: 1, failed: 1 })
      let row = (await api.get(`/api/v1/backups/${old.id}`)).body
      t.match(row.deletion, { object: 'deleted', localCopy: 'pending', lastError: { code: 'AGENT_UNREACHABLE' } })
      t.equal(row.expiredAt, null, 'not expired while a copy remains')
      t.notOk(await exists(old.objectKey))
      t.equal((await api.delete(`/api/v1/servers/${serverId}`)).status, 204)
      t.match(await retention.sweep(), { lost: 1 })
      row = (await api.get(`/api/v1/backups/${old.id}`)).body
      t.match(row.deletion, { object: 'deleted', localCopy: 'lost', lastError: null })
      t.equal(row.expiredAt, now.toISOString())
    })

  })
}
