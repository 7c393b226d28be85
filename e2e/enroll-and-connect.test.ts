import t from 'tap'
import { startCoordinator, startAgent, runCli, waitOnline } from '../coordinator/test/helpers/processes.ts'
import { waitFor } from '../coordinator/test/helpers/wait-for.ts'

t.test('an enrolled agent comes online with its hostname, OS, version and the dump tools it found', async (t) => {
  // The embedded default store, as `npm start` runs it.
  const coordinator = await startCoordinator(t, { store: 'pglite' })
  const agent = await startAgent(t, coordinator)
  const server = await waitOnline(coordinator, agent.serverId)
  t.equal(server.hostname, (await import('node:os')).hostname())
  t.match(server.os, /^Linux /)
  t.equal(server.arch, process.arch)
  t.equal(server.agentVersion, '0.1.0')
  t.type(server.lastSeenAt, 'string')
  t.match(server.tools, { pg_dump: /^\d+\.\d+/, psql: /^\d+/ }, 'PostgreSQL client tools detected with versions')
  t.ok(server.tools.mysqldump !== undefined || server.tools['mariadb-dump'] !== undefined, 'a MySQL dump tool detected')

  const status = await waitFor('agent status connected', async () => {
    const r = await runCli(['status', '--config', agent.configPath])
    const s = JSON.parse(r.stdout) as { connected: boolean, runningJobs: string[], outboxPending: number }
    return r.code === 0 && s.connected ? s : undefined
  })
  t.same(status.runningJobs, [])
  t.equal(status.outboxPending, 0)

  // Heartbeats keep lastSeenAt moving and report health.
  const later = await waitFor('a newer heartbeat', async () => {
    const r = await coordinator.api.get(`/api/v1/servers/${agent.serverId}`)
    return r.body.lastSeenAt > server.lastSeenAt && r.body.health !== null ? r.body : undefined
  })
  t.type(later.health.memory.agentRssBytes, 'number')
  t.type(later.health.spoolFreeBytes, 'number')
})

t.test('the agent refuses to run as root without --allow-root', async (t) => {
  if (process.getuid?.() !== 0) { t.pass('not root here: nothing to refuse'); return }
  const env = { ...process.env }
  delete env.CLOUDPILOT_ALLOW_ROOT
  const r = await runCli(['run', '--config', '/nonexistent/agent.json'], env)
  t.equal(r.code, 1)
  t.match(r.stderr, /refusing to run as root/)
})

t.test('a reused enrollment token is refused by the CLI with its code', async (t) => {
  const coordinator = await startCoordinator(t)
  const token = (await coordinator.api.post('/api/v1/enrollment-tokens', {})).body.token as string
  const dir = (await import('node:os')).tmpdir()
  const first = await runCli(['enroll', '--coordinator', coordinator.url, '--token', token, '--config', `${dir}/cp-enroll-${process.pid}-a.json`, '--state-dir', `${dir}/cp-enroll-state`])
  t.equal(first.code, 0, first.stderr)
  const second = await runCli(['enroll', '--coordinator', coordinator.url, '--token', token, '--config', `${dir}/cp-enroll-${process.pid}-b.json`])
  t.equal(second.code, 1)
  t.match(second.stderr, /ENROLLMENT_TOKEN_USED/)
  const unreachable = await runCli(['enroll', '--coordinator', 'http://127.0.0.1:1', '--token', token, '--config', `${dir}/cp-enroll-${process.pid}-c.json`])
  t.equal(unreachable.code, 1)
  t.match(unreachable.stderr, /cannot reach the coordinator/)
  const { rm } = await import('node:fs/promises')
  for (const f of ['a', 'b', 'c']) await rm(`${dir}/cp-enroll-${process.pid}-${f}.json`, { force: true })
})

t.test('revoking a server closes its live socket at once and the agent stops with "enroll again"', async (t) => {
  const coordinator = await startCoordinator(t)
  const agent = await startAgent(t, coordinator)
  await waitOnline(coordinator, agent.serverId)
  const exit = new Promise<number | null>((resolve) => agent.proc.once('exit', (code) => resolve(code)))
  const started = Date.now()
  const del = await coordinator.api.delete(`/api/v1/servers/${agent.serverId}`)
  t.equal(del.status, 204)
  const code = await exit
  t.equal(code, 78, 'exit code 78 (EX_CONFIG): reconnecting is pointless')
  t.ok(Date.now() - started < 5000, 'closed at once, not at the next heartbeat')
  t.match(await agent.log(), /revoked/)
  t.equal((await coordinator.api.get('/healthz')).body.agentsConnected, 0)
})
