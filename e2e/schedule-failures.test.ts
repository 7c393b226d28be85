import t from 'tap'
import WebSocket from 'ws'
import { once } from 'node:events'
import { randomBytes } from 'node:crypto'
import { mkdir, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { ERRORS, PROTOCOL_VERSION } from '@cloudpilot/protocol'
import { startCoordinator, startAgent, waitOnline, tempDir, type CoordinatorProcess } from '../coordinator/test/helpers/processes.ts'
import { apiClient } from '../coordinator/test/helpers/api-client.ts'
import { psql, tempPostgresDatabase } from '../coordinator/test/helpers/databases.ts'
import { waitFor } from '../coordinator/test/helpers/wait-for.ts'
import { s3, createS3Destination, createPlan } from './helpers.ts'

/**
 * Scheduled runs that do not succeed, through real coordinator and agent processes. Slots come every few seconds
 * with the test clock option CLOUDPILOT_SCHEDULE_SECONDS=1 (6-field cron).
 */

const SECONDS = { CLOUDPILOT_SCHEDULE_SECONDS: '1' }

async function rowsOf (c: CoordinatorProcess, planId: string): Promise<any[]> {
  return ((await c.api.get(`/api/v1/backups?planId=${planId}&limit=500`)).body.items as any[]).sort((a, b) => a.createdAt.localeCompare(b.createdAt))
}

const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')

t.test('timeoutSeconds ends a scheduled run as failed TIMEOUT with the documented hint; slots meanwhile are skipped, not stacked', async (t) => {
  const bucket = await s3(t)
  const coordinator = await startCoordinator(t, { env: SECONDS })
  const agent = await startAgent(t, coordinator)
  await waitOnline(coordinator, agent.serverId)
  // 6 MB that do not compress, uploaded at 256 KB/s: ~24 s, far beyond the plan's 10 s.
  const dir = await tempDir(t, 'cp-timeout')
  await mkdir(path.join(dir, 'data'))
  await writeFile(path.join(dir, 'data', 'random.bin'), randomBytes(6 * 1024 * 1024))
  const destinationId = await createS3Destination(coordinator, bucket, { config: { rateLimitBytesPerSecond: 256 * 1024 } })
  const planId = await createPlan(coordinator, {
    serverId: agent.serverId, type: 'files', source: { paths: [path.join(dir, 'data')] }, destinationId, compression: 'none',
    timeoutSeconds: 10, schedule: '*/4 * * * * *',
  })
  const timedOut = await waitFor('a run failed with TIMEOUT', async () => (await rowsOf(coordinator, planId)).find((r) => r.error?.code === 'TIMEOUT'), 60_000, 250)
  // Let the slot after the timeout fire, then stop the schedule.
  await waitFor('the next run started after the timeout', async () => (await rowsOf(coordinator, planId)).some((r) => r.scheduledFor > timedOut.scheduledFor && r.status !== 'cancelled'), 30_000, 250)
  t.equal((await coordinator.api.patch(`/api/v1/plans/${planId}`, { schedule: null })).status, 200)

  t.equal(timedOut.status, 'failed')
  t.equal(timedOut.trigger, 'scheduled')
  t.equal(timedOut.offsiteStatus, 'failed', 'the upload was aborted')
  t.match(timedOut.error.message, /timeoutSeconds \(10 s\)/)
  const retry = `Failed runs are not retried automatically: run the plan again with POST /api/v1/plans/${planId}/run.`
  t.equal(timedOut.error.hint, `${ERRORS.TIMEOUT.hint} ${retry}`, 'the documented TIMEOUT hint, then how to retry')
  const ran = new Date(timedOut.finishedAt).getTime() - new Date(timedOut.startedAt).getTime()
  t.ok(ran >= 9_000 && ran < 20_000, `stopped after about 10 s (${ran} ms)`)

  const rows = await rowsOf(coordinator, planId)
  const during = rows.filter((r) => r.scheduledFor > timedOut.scheduledFor && new Date(r.scheduledFor).getTime() < new Date(timedOut.finishedAt).getTime() - 1000)
  t.ok(during.length >= 1, `slots while it ran: ${during.length}`)
  for (const r of during) {
    t.equal(r.status, 'cancelled', `${r.scheduledFor} skipped`)
    t.equal(r.error.code, 'SKIPPED_OVERLAP')
    t.equal(r.error.hint, ERRORS.SKIPPED_OVERLAP.hint)
    t.match(r.error.message, new RegExp(`backup ${timedOut.id} of this plan`))
  }
  t.equal(rows.filter((r) => r.trigger === 'manual').length, 0, 'the failed run was not retried behind the user\'s back')
  t.equal(new Set(rows.map((r) => r.scheduledFor)).size, rows.length, 'one row per slot')
})

t.test('a slot whose server is offline is a failed AGENT_LOST row; failed runs are not retried silently', async (t) => {
  const coordinator = await startCoordinator(t, { env: SECONDS })
  const agent = await startAgent(t, coordinator)
  await waitOnline(coordinator, agent.serverId)
  const db = await tempPostgresDatabase(t, 'cp_src')
  await psql(db.name, 'create table t (id int); insert into t values (1);')
  await agent.stop()
  await waitFor('server offline', async () => (await coordinator.api.get(`/api/v1/servers/${agent.serverId}`)).body.status === 'offline', 20_000)
  const planId = await createPlan(coordinator, {
    serverId: agent.serverId, type: 'database', schedule: '*/2 * * * * *',
    source: { engine: 'postgresql', host: '127.0.0.1', port: 5432, username: 'postgres', databases: [db.name] },
  })
  const lost = await waitFor('two failed slots', async () => {
    // A slot's row is inserted `pending` and failed in the next statement: judge only settled rows.
    const settled = (await rowsOf(coordinator, planId)).filter((r) => r.status !== 'pending')
    return settled.length >= 2 ? settled : undefined
  }, 20_000, 200)
  for (const r of lost) {
    t.equal(r.status, 'failed')
    t.equal(r.trigger, 'scheduled')
    t.equal(r.error.code, 'AGENT_LOST')
    t.match(r.error.message, /offline/)
    t.equal(r.error.hint, ERRORS.AGENT_LOST.hint, 'the hint says how to retry: POST /api/v1/plans/:id/run')
  }
  // The agent comes back: the next slots run; the failed ones stay failed (nothing re-ran them).
  await agent.start()
  await waitOnline(coordinator, agent.serverId)
  await waitFor('a completed scheduled run', async () => (await rowsOf(coordinator, planId)).some((r) => r.status === 'completed'), 30_000, 200)
  await coordinator.api.patch(`/api/v1/plans/${planId}`, { schedule: null })
  const rows = await rowsOf(coordinator, planId)
  for (const r of lost) t.equal(rows.find((x) => x.id === r.id)?.status, 'failed', 'still failed')
  t.equal(rows.filter((r) => r.trigger === 'manual').length, 0)
  t.equal(new Set(rows.map((r) => r.scheduledFor)).size, rows.length, 'one row per slot, no silent re-run of a failed slot')
})

t.test('a scheduled job the agent never starts becomes failed MISSED after the start timeout', async (t) => {
  const coordinator = await startCoordinator(t, { env: { ...SECONDS, CLOUDPILOT_START_TIMEOUT_SECONDS: '2' } })
  // A connected agent that takes jobs and never starts them: a raw protocol peer with a real credential.
  const token = (await coordinator.api.post('/api/v1/enrollment-tokens', {})).body.token
  const enrolled = (await apiClient(coordinator.url, null).post('/api/v1/agents/enroll', { token })).body
  const ws = new WebSocket(`${coordinator.url.replace('http', 'ws')}/agent/ws`, { headers: { authorization: `Bearer ${enrolled.agentCredential as string}` } })
  t.teardown(() => ws.terminate())
  const received: any[] = []
  ws.on('message', (data: Buffer) => received.push(JSON.parse(data.toString())))
  await once(ws, 'open')
  ws.send(JSON.stringify({ type: 'hello', id: 'h1', protocolVersion: PROTOCOL_VERSION, agentVersion: '0.1.0', hostname: 'stuck', os: 'linux', arch: 'x64', tools: {}, runningJobs: [] }))
  const beat = setInterval(() => ws.send(JSON.stringify({ type: 'heartbeat', id: `b${Date.now()}`, load: [0, 0, 0], memory: { totalBytes: 1, freeBytes: 1, agentRssBytes: 1 }, spoolFreeBytes: null, runningJobs: [] })), 200)
  t.teardown(() => clearInterval(beat))
  await waitOnline(coordinator, enrolled.serverId)
  const planId = await createPlan(coordinator, {
    serverId: enrolled.serverId, type: 'database', schedule: '*/5 * * * * *',
    source: { engine: 'postgresql', host: '127.0.0.1', port: 5432, username: 'postgres', databases: ['x'] },
  })
  const missed = await waitFor('a MISSED row', async () => (await rowsOf(coordinator, planId)).find((r) => r.status === 'failed'), 20_000, 200)
  await coordinator.api.patch(`/api/v1/plans/${planId}`, { schedule: null })
  t.ok(received.some((f) => f.type === 'job.run' && f.job.jobId === missed.id), 'the job was sent to the agent')
  t.equal(missed.trigger, 'scheduled')
  t.equal(missed.error.code, 'MISSED')
  t.match(missed.error.message, /did not start the job within 2 s/)
  t.equal(missed.error.hint, ERRORS.MISSED.hint)
  t.match(missed.error.hint, new RegExp(escape('POST /api/v1/plans/:id/run')))
  t.equal(missed.startedAt, null)
})
