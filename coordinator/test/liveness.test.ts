import t from 'tap'
import WebSocket from 'ws'
import { PROTOCOL_VERSION, newFrameId } from '@cloudpilot/protocol'
import { startCoordinator, type CoordinatorProcess } from './helpers/processes.ts'
import { waitFor } from './helpers/wait-for.ts'
import { psql, tempPostgresDatabase } from './helpers/databases.ts'

/**
 * Liveness through a real coordinator process and raw protocol sockets: last_seen_at is written in batches (not
 * per heartbeat), connections are pinged only when quiet, and a server is `offline` after 3 missed intervals.
 */
const INTERVAL_MS = 1000

interface SimAgent {
  serverId: string
  ws: WebSocket
  pings: number
  welcomedAt: number
  closed: Promise<number>
}

async function enrollSim (coordinator: CoordinatorProcess): Promise<{ serverId: string, agentCredential: string }> {
  const token = await coordinator.api.post('/api/v1/enrollment-tokens', {})
  const enrolled = await coordinator.api.post('/api/v1/agents/enroll', { token: token.body.token, hostname: 'sim' })
  if (enrolled.status !== 201) throw new Error(`enroll: ${enrolled.status} ${JSON.stringify(enrolled.body)}`)
  return enrolled.body
}

async function connectSimAgent (coordinator: CoordinatorProcess, enrolled?: { serverId: string, agentCredential: string }): Promise<SimAgent> {
  enrolled ??= await enrollSim(coordinator)
  const ws = new WebSocket(coordinator.url.replace(/^http/, 'ws') + '/agent/ws', { headers: { authorization: `Bearer ${enrolled.agentCredential}` } })
  const agent: SimAgent = {
    serverId: enrolled.serverId,
    ws,
    pings: 0,
    welcomedAt: 0,
    closed: new Promise((resolve) => ws.once('close', () => resolve(Date.now()))),
  }
  ws.on('ping', () => { agent.pings++ })
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => {
      ws.send(JSON.stringify({ type: 'hello', id: newFrameId(), protocolVersion: PROTOCOL_VERSION, agentVersion: '0.1.0', hostname: 'sim', os: 'Linux', arch: 'x64', tools: {}, runningJobs: [] }))
    })
    ws.on('message', (data: Buffer) => {
      const frame = JSON.parse(data.toString()) as { type: string }
      if (frame.type === 'welcome' && agent.welcomedAt === 0) {
        agent.welcomedAt = Date.now()
        resolve()
      }
    })
    ws.once('error', reject)
  })
  return agent
}

function heartbeat (agent: SimAgent): void {
  agent.ws.send(JSON.stringify({ type: 'heartbeat', id: newFrameId(), load: [0.5, 0.4, 0.3], memory: { totalBytes: 4e9, freeBytes: 2e9, agentRssBytes: 5e7 }, spoolFreeBytes: 1e10, runningJobs: [] }))
}

for (const store of ['postgresql', 'pglite'] as const) {
  t.test(`${store}: heartbeats keep a server online with a fresh last_seen_at, without pings; a silent one is offline after 3 intervals`, async (t) => {
    const coordinator = await startCoordinator(t, { store, heartbeatIntervalMs: INTERVAL_MS })
    t.teardown(async () => { await coordinator.stop() })
    // Past the startup grace (2 s in the test helper) the sweeper is active.
    await new Promise((resolve) => setTimeout(resolve, 2000))
    const beating = await connectSimAgent(coordinator)
    const silent = await connectSimAgent(coordinator)
    t.teardown(() => { beating.ws.terminate(); silent.ws.terminate() })
    heartbeat(beating)
    const timer = setInterval(() => heartbeat(beating), INTERVAL_MS)
    t.teardown(() => clearInterval(timer))

    const offlineAt = await waitFor('the silent server offline', async () => {
      const r = await coordinator.api.get(`/api/v1/servers/${silent.serverId}`)
      return r.body.status === 'offline' ? Date.now() : undefined
    }, 15_000, 50)
    const silentFor = offlineAt - silent.welcomedAt
    // (less the time between the hello reaching the coordinator and the welcome reaching us)
    t.ok(silentFor >= 3 * INTERVAL_MS - 250, `offline only after 3 intervals without a frame (${silentFor} ms)`)
    t.ok(silentFor <= 3 * INTERVAL_MS + 3000, `and within a sweep or two of that (${silentFor} ms)`)
    t.ok(silent.pings >= 1, `the quiet connection was pinged (${silent.pings})`)
    const closedAt = await Promise.race([silent.closed, new Promise<null>((resolve) => setTimeout(() => resolve(null), 5000))])
    t.not(closedAt, null, 'its socket was closed by the coordinator')

    const b = await coordinator.api.get(`/api/v1/servers/${beating.serverId}`)
    t.equal(b.body.status, 'online', 'the server sending heartbeats stays online')
    const age = Date.now() - Date.parse(b.body.lastSeenAt)
    t.ok(age < 2 * INTERVAL_MS + 500, `its last_seen_at is written by the batched flush (${age} ms old)`)
    t.equal(b.body.health?.load?.[0], 0.5, 'with the health of its last heartbeat')
    t.equal(beating.pings, 0, 'a connection that sends heartbeats is not pinged')
    t.equal(beating.ws.readyState, WebSocket.OPEN, 'and stays open')
  })
}

t.test('the replica holding an agent is recorded, cleared on disconnect (batched) and kept across a quick reconnect', async (t) => {
  const database = await tempPostgresDatabase(t, 'cp_liveness')
  const coordinator = await startCoordinator(t, { databaseUrl: database.url, heartbeatIntervalMs: INTERVAL_MS })
  t.teardown(async () => { await coordinator.stop() })
  const holder = async (serverId: string): Promise<string> => await psql(database.name, `select coalesce(connected_replica, '') from servers where id = '${serverId}'`)
  const enrolled = await enrollSim(coordinator)
  const first = await connectSimAgent(coordinator, enrolled)
  const replica = await waitFor('the holding replica recorded', async () => (await holder(enrolled.serverId)) || undefined, 5000, 50)

  first.ws.terminate()
  await waitFor('the disconnection written', async () => (await holder(enrolled.serverId)) === '', 5000, 20)
  t.pass('cleared after the agent disconnected')

  // Drop and come back at once, several times: a disconnection still waiting for its batch must not clear the new connection.
  let last = await connectSimAgent(coordinator, enrolled)
  for (let i = 0; i < 5; i++) {
    last.ws.terminate()
    last = await connectSimAgent(coordinator, enrolled)
  }
  t.teardown(() => { last.ws.terminate() })
  await new Promise((resolve) => setTimeout(resolve, 500))
  t.equal(await holder(enrolled.serverId), replica, 'held by this replica after quick reconnects')
  t.equal((await coordinator.api.get(`/api/v1/servers/${enrolled.serverId}`)).body.status, 'online', 'and online')
})
