import t from 'tap'
import path from 'node:path'
import { readdir, readFile } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { startCoordinator, startAgent, waitOnline, runCli } from '../coordinator/test/helpers/processes.ts'
import { psql, tempPostgresDatabase } from '../coordinator/test/helpers/databases.ts'
import { waitFor } from '../coordinator/test/helpers/wait-for.ts'
import { s3, createS3Destination, createPlan, watchBackup } from './helpers.ts'

/** A database whose dump is ~32 MB of SQL (1M md5 strings, ~18 MB gzipped), so a rate-limited upload runs long enough to interrupt. */
async function bigDatabase (t: Parameters<typeof tempPostgresDatabase>[0]): Promise<string> {
  const db = await tempPostgresDatabase(t, 'cp_big')
  await psql(db.name, `create table blobs (id serial primary key, body text);
    insert into blobs (body) select string_agg(md5(g::text || ':' || i::text), '') from generate_series(1, 1000000) g, generate_series(1, 1) i group by g % 50000;`)
  return db.name
}

async function allFiles (dir: string): Promise<string[]> {
  if (!existsSync(dir)) return []
  const out: string[] = []
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) if (e.isFile()) out.push(path.join(e.parentPath, e.name))
  return out
}

/** pids of running processes whose command line mentions `needle`. */
async function pidsMentioning (needle: string): Promise<number[]> {
  const pids: number[] = []
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue
    const cmd = await readFile(`/proc/${name}/cmdline`, 'utf8').catch(() => '')
    if (cmd.includes(needle) && !cmd.includes('tap')) pids.push(Number(name))
  }
  return pids
}

t.test('cancel stops a running backup: cancelled, dump process group gone, no object, no partial spool file', async (t) => {
  const bucket = await s3(t)
  const coordinator = await startCoordinator(t)
  const agent = await startAgent(t, coordinator)
  await waitOnline(coordinator, agent.serverId)
  const db = await bigDatabase(t)
  const destinationId = await createS3Destination(coordinator, bucket, { config: { rateLimitBytesPerSecond: 256 * 1024 } })
  const planId = await createPlan(coordinator, {
    serverId: agent.serverId, type: 'database', destinationId, keepLocal: true,
    source: { engine: 'postgresql', host: '127.0.0.1', port: 5432, username: 'postgres', databases: [db] },
  })
  const run = await coordinator.api.post(`/api/v1/plans/${planId}/run`)
  await waitFor('upload under way', async () => {
    const r = await coordinator.api.get(`/api/v1/backups/${run.body.id}`)
    return r.body.status === 'in_progress' && r.body.offsiteStatus === 'uploading' && (r.body.progress?.bytes ?? 0) > 0
  }, 60_000, 50)
  const dumpPids = await pidsMentioning(db)
  t.ok(dumpPids.length > 0, 'pg_dump is running')
  t.ok((await allFiles(path.join(agent.spoolDir, agent.serverId))).some((f) => f.includes(run.body.id)), 'a partial spool file exists while running')

  const cancel = await coordinator.api.post(`/api/v1/backups/${run.body.id}/cancel`)
  t.equal(cancel.status, 202)
  t.equal(cancel.body.cancelRequested, true)
  const { final } = await watchBackup(coordinator, run.body.id, 30_000)
  t.equal(final.status, 'cancelled')
  t.equal(final.error, null)
  t.equal(final.offsiteStatus, 'failed', 'the upload that was under way did not complete')
  for (const pid of dumpPids) t.notOk(existsSync(`/proc/${pid}`), `dump process ${pid} is gone`)
  t.same(await pidsMentioning(db), [], 'no process of the dump remains')
  t.same((await allFiles(path.join(bucket.directory, bucket.bucket))).filter((f) => f.includes(planId)), [], 'nothing under the plan\'s keys in the bucket')
  t.same((await allFiles(path.join(agent.spoolDir, agent.serverId))).filter((f) => f.includes(run.body.id)), [], 'no partial spool file remains')
  const again = await coordinator.api.post(`/api/v1/backups/${run.body.id}/cancel`)
  t.equal(again.status, 409, 'a finished backup cannot be cancelled again')
})

t.test('agent killed with SIGKILL mid-backup: failed AGENT_LOST once offline, never completed', async (t) => {
  const bucket = await s3(t)
  const coordinator = await startCoordinator(t)
  const agent = await startAgent(t, coordinator)
  await waitOnline(coordinator, agent.serverId)
  const db = await bigDatabase(t)
  const destinationId = await createS3Destination(coordinator, bucket, { config: { rateLimitBytesPerSecond: 256 * 1024 } })
  const planId = await createPlan(coordinator, {
    serverId: agent.serverId, type: 'database', destinationId, keepLocal: true,
    source: { engine: 'postgresql', host: '127.0.0.1', port: 5432, username: 'postgres', databases: [db] },
  })
  const run = await coordinator.api.post(`/api/v1/plans/${planId}/run`)
  await waitFor('backup in progress', async () => (await coordinator.api.get(`/api/v1/backups/${run.body.id}`)).body.progress?.bytes > 0, 60_000, 50)
  await agent.kill()
  const failed = await waitFor('row failed after the agent went offline', async () => {
    const r = await coordinator.api.get(`/api/v1/backups/${run.body.id}`)
    return r.body.status === 'failed' ? r.body : undefined
  }, 20_000)
  t.equal(failed.error.code, 'AGENT_LOST')
  t.match(failed.error.hint, /systemctl status cloudpilot-agent/)
  t.equal((await coordinator.api.get(`/api/v1/servers/${agent.serverId}`)).body.status, 'offline')

  // The agent comes back: it reports the interrupted job failed and removes its partial files.
  await agent.start()
  await waitOnline(coordinator, agent.serverId)
  await waitFor('agent outbox drained', async () => {
    const s = JSON.parse((await runCli(['status', '--config', agent.configPath])).stdout) as { connected: boolean, outboxPending: number }
    return s.connected && s.outboxPending === 0
  })
  const after = (await coordinator.api.get(`/api/v1/backups/${run.body.id}`)).body
  t.equal(after.status, 'failed', 'still failed, never completed')
  t.equal(after.error.code, 'AGENT_LOST')
  t.same((await allFiles(path.join(agent.spoolDir, agent.serverId))).filter((f) => f.includes(run.body.id)), [], 'partial spool file removed on restart')
  t.same((await allFiles(path.join(bucket.directory, bucket.bucket))).filter((f) => f.includes(planId) && !f.endsWith('.part')), [], 'no object published')
})

t.test('coordinator killed and restarted mid-backup: the final status still arrives (outbox)', async (t) => {
  const bucket = await s3(t)
  // Agents get 30 s after a coordinator start to reconnect before servers are called offline.
  const coordinator = await startCoordinator(t, { env: { CLOUDPILOT_STARTUP_GRACE_SECONDS: '30' } })
  const agent = await startAgent(t, coordinator)
  await waitOnline(coordinator, agent.serverId)
  const db = await tempPostgresDatabase(t, 'cp_mid')
  await psql(db.name, "create table t (id int, v text); insert into t select g, repeat(md5(g::text), 4) from generate_series(1, 60000) g;")
  const destinationId = await createS3Destination(coordinator, bucket, { config: { rateLimitBytesPerSecond: 512 * 1024 } })
  const planId = await createPlan(coordinator, {
    serverId: agent.serverId, type: 'database', destinationId,
    source: { engine: 'postgresql', host: '127.0.0.1', port: 5432, username: 'postgres', databases: [db.name] },
  })
  const run = await coordinator.api.post(`/api/v1/plans/${planId}/run`)
  await waitFor('backup in progress', async () => (await coordinator.api.get(`/api/v1/backups/${run.body.id}`)).body.status === 'in_progress', 30_000, 50)
  await coordinator.kill()
  // The agent finishes while the coordinator is down; its completion waits in the outbox.
  await waitFor('agent finished the job while the coordinator was down', async () => /backup completed/.test(await agent.log()), 120_000, 200)
  const pending = await waitFor('the completion held in the agent outbox', async () => {
    const s = JSON.parse((await runCli(['status', '--config', agent.configPath])).stdout) as { outboxPending: number, connected: boolean }
    return s.outboxPending >= 1 ? s : undefined
  }, 15_000, 250)
  t.equal(pending.connected, false, 'while the coordinator is down')
  t.ok(pending.outboxPending >= 1, 'the completion is held in the outbox')
  await coordinator.restart()
  const { final, statuses } = await watchBackup(coordinator, run.body.id, 60_000)
  t.equal(final.status, 'completed', JSON.stringify(final.error))
  t.notOk(statuses.includes('failed'), 'never shown as failed while the agent reconnected')
  t.equal(final.offsiteStatus, 'uploaded')
  t.match(final.sha256, /^[0-9a-f]{64}$/)
})
