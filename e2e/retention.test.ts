import t from 'tap'
import { existsSync } from 'node:fs'
import { readdir } from 'node:fs/promises'
import path from 'node:path'
import { startCoordinator, startAgent, waitOnline, waitBackup, tempDir, type CoordinatorProcess } from '../coordinator/test/helpers/processes.ts'
import { psql, tempPostgresDatabase } from '../coordinator/test/helpers/databases.ts'
import { waitFor } from '../coordinator/test/helpers/wait-for.ts'
import { s3, createS3Destination, createPlan } from './helpers.ts'

/**
 * Retention through real processes: a coordinator sweeping every second (CLOUDPILOT_RETENTION_SWEEP_SECONDS=1), a
 * real agent, S3 (s3rver) and a local destination. Backups are made for real; their age is then moved into the
 * past in the coordinator's database (the test clock for retention), and the sweeper does the rest.
 */

async function allFiles (dir: string): Promise<string[]> {
  if (!existsSync(dir)) return []
  const out: string[] = []
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) if (e.isFile()) out.push(path.join(e.parentPath, e.name))
  return out
}

async function backupNow (c: CoordinatorProcess, planId: string): Promise<any> {
  const run = await c.api.post(`/api/v1/plans/${planId}/run`)
  const done = await waitBackup(c, run.body.id, ['completed', 'failed', 'cancelled'], 60_000)
  if (done.status !== 'completed') throw new Error(`backup ${done.status}: ${JSON.stringify(done.error)}`)
  return done
}

async function age (storeName: string, backupIds: string[], days: number): Promise<void> {
  const ids = backupIds.map((id) => `'${id}'`).join(', ')
  await psql(storeName, `update backups set created_at = created_at - interval '${days} days', started_at = started_at - interval '${days} days',
    finished_at = finished_at - interval '${days} days', expires_at = expires_at - interval '${days} days' where id in (${ids})`)
}

async function waitExpired (c: CoordinatorProcess, backupId: string, timeoutMs = 20_000): Promise<any> {
  return await waitFor(`backup ${backupId} expired`, async () => {
    const b = (await c.api.get(`/api/v1/backups/${backupId}`)).body
    return b.expiredAt !== null ? b : undefined
  }, timeoutMs, 200)
}

t.test('retention deletes the offsite object through storage/ and the spool copy through the agent', async (t) => {
  const bucket = await s3(t)
  const store = await tempPostgresDatabase(t, 'cp_ret')
  const coordinator = await startCoordinator(t, { databaseUrl: store.url, env: { CLOUDPILOT_RETENTION_SWEEP_SECONDS: '1' } })
  const agent = await startAgent(t, coordinator)
  await waitOnline(coordinator, agent.serverId)
  const db = await tempPostgresDatabase(t, 'cp_src')
  await psql(db.name, 'create table t (id int primary key, v text); insert into t select g, md5(g::text) from generate_series(1, 1000) g;')
  const source = { engine: 'postgresql', host: '127.0.0.1', port: 5432, username: 'postgres', databases: [db.name] }
  const destinationId = await createS3Destination(coordinator, bucket)
  const planId = await createPlan(coordinator, { serverId: agent.serverId, type: 'database', destinationId, keepLocal: true, retentionDays: 7, source })
  const made = [await backupNow(coordinator, planId), await backupNow(coordinator, planId), await backupNow(coordinator, planId)]
  const inBucket = async (): Promise<string[]> => (await allFiles(path.join(bucket.directory, bucket.bucket))).map((f) => path.relative(path.join(bucket.directory, bucket.bucket), f))
  for (const b of made) {
    t.ok(existsSync(b.localPath), 'spool copy made')
    t.ok(existsSync(`${b.localPath}.manifest.json`))
    t.ok((await inBucket()).some((f) => f.startsWith(b.objectKey)), 'object made')
  }

  t.test('preview before: nothing to delete yet', async (t) => {
    const preview = (await coordinator.api.get(`/api/v1/plans/${planId}/retention-preview`)).body
    t.same(preview.delete, [])
    t.equal(preview.keep.length, 3)
  })

  t.test('two backups made 10 days ago (retention 7 days) are deleted everywhere; the newest stays', async (t) => {
    const [old1, old2, newest] = made
    await age(store.name, [old1.id, old2.id, newest.id], 10)
    const preview = (await coordinator.api.get(`/api/v1/plans/${planId}/retention-preview`)).body
    // The sweeper may already be at work: what the preview lists to delete or deleting is exactly the two old ones.
    t.same([...preview.delete, ...preview.deleting].map((d: any) => d.backupId).sort(), [old1.id, old2.id].sort())
    for (const b of [old1, old2]) {
      const expired = await waitExpired(coordinator, b.id)
      t.equal(expired.status, 'completed')
      t.match(expired.deletion, { reason: 'older than retentionDays (7) and not the newest', object: 'deleted', localCopy: 'deleted', lastError: null })
      t.notOk(existsSync(b.localPath), 'spool copy deleted by the agent')
      t.notOk(existsSync(`${b.localPath}.manifest.json`), 'and its manifest')
      t.notOk((await inBucket()).some((f) => f.startsWith(b.objectKey)), 'object and manifest deleted from S3')
      const dl = await coordinator.api.get(`/api/v1/backups/${b.id}/download`)
      t.equal(dl.status, 404)
      t.equal(dl.body.error.code, 'OBJECT_NOT_FOUND')
    }
    await new Promise((resolve) => setTimeout(resolve, 2500))
    const kept = (await coordinator.api.get(`/api/v1/backups/${newest.id}`)).body
    t.equal(kept.deletion, null, 'the newest completed backup is never deleted, although it expired')
    t.ok(existsSync(newest.localPath))
    t.ok((await inBucket()).some((f) => f.startsWith(newest.objectKey)))
    t.same((await coordinator.api.get(`/api/v1/backups?planId=${planId}&expired=true`)).body.items.map((b: any) => b.id).sort(), [old1.id, old2.id].sort())
  })

  t.test('with the agent offline the spool copy waits (visible), and is deleted when the agent is back', async (t) => {
    const [b1, b2] = [await backupNow(coordinator, planId), await backupNow(coordinator, planId)]
    await agent.stop()
    await age(store.name, [b1.id], 30)
    const waiting = await waitFor('the deletion to wait for the agent', async () => {
      const b = (await coordinator.api.get(`/api/v1/backups/${b1.id}`)).body
      return b.deletion?.lastError?.code === 'AGENT_UNREACHABLE' && b.deletion.attempts >= 2 ? b : undefined
    }, 20_000, 200)
    t.match(waiting.deletion, { object: 'deleted', localCopy: 'pending' }, 'the coordinator deleted the object itself')
    t.equal(waiting.expiredAt, null)
    t.ok(existsSync(b1.localPath), 'the spool copy is still there')
    await agent.start()
    const expired = await waitExpired(coordinator, b1.id, 30_000)
    t.match(expired.deletion, { object: 'deleted', localCopy: 'deleted', lastError: null })
    t.notOk(existsSync(b1.localPath))
    t.ok(existsSync(b2.localPath), 'the newest stays')
  })
})

t.test('a local destination lives on the server: the agent deletes its objects', async (t) => {
  const store = await tempPostgresDatabase(t, 'cp_ret')
  const coordinator = await startCoordinator(t, { databaseUrl: store.url, env: { CLOUDPILOT_RETENTION_SWEEP_SECONDS: '1' } })
  const agent = await startAgent(t, coordinator)
  await waitOnline(coordinator, agent.serverId)
  const dir = await tempDir(t, 'cp-localdest')
  const dest = await coordinator.api.post('/api/v1/destinations', { name: 'second disk', type: 'local', config: { path: dir } })
  t.equal(dest.status, 201, JSON.stringify(dest.body))
  const files = await tempDir(t, 'cp-files')
  const { writeFile } = await import('node:fs/promises')
  await writeFile(path.join(files, 'a.txt'), 'hello')
  const planId = await createPlan(coordinator, { serverId: agent.serverId, type: 'files', source: { paths: [files] }, destinationId: dest.body.id, retentionDays: 1 })
  const old = await backupNow(coordinator, planId)
  const newest = await backupNow(coordinator, planId)
  t.equal(old.localPath, null, 'no spool copy: the object is the only copy')
  t.ok(existsSync(path.join(dir, old.objectKey)))
  t.ok(existsSync(path.join(dir, `${old.objectKey}.manifest.json`)))
  await age(store.name, [old.id, newest.id], 3)
  const expired = await waitExpired(coordinator, old.id)
  t.match(expired.deletion, { object: 'deleted', localCopy: null, lastError: null })
  t.notOk(existsSync(path.join(dir, old.objectKey)), 'object deleted by the agent')
  t.notOk(existsSync(path.join(dir, `${old.objectKey}.manifest.json`)))
  t.ok(existsSync(path.join(dir, newest.objectKey)), 'the newest stays')
  t.match(await agent.log(), /retention: deleted backup copies/)
})
