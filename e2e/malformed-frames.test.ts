import t from 'tap'
import WebSocket, { WebSocketServer } from 'ws'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { MAX_FRAME_BYTES, PROTOCOL_VERSION } from '@cloudpilot/protocol'
import { startCoordinator, startAgent, waitOnline, tempDir } from '../coordinator/test/helpers/processes.ts'
import { apiClient } from '../coordinator/test/helpers/api-client.ts'
import { waitFor } from '../coordinator/test/helpers/wait-for.ts'
import { writeFile } from 'node:fs/promises'
import path from 'node:path'
import { spawn } from 'node:child_process'
import { AGENT_BIN } from '../coordinator/test/helpers/processes.ts'

/** A raw WebSocket client holding a real agent credential, to send what a real agent never would. */
async function rawAgentSocket (url: string, credential: string): Promise<{ ws: WebSocket, next: () => Promise<any> }> {
  const ws = new WebSocket(`${url.replace('http', 'ws')}/agent/ws`, { headers: { authorization: `Bearer ${credential}` }, maxPayload: 16 * MAX_FRAME_BYTES })
  const inbox: any[] = []
  const waiters: Array<(v: any) => void> = []
  ws.on('message', (data: Buffer) => {
    const frame = JSON.parse(data.toString())
    const w = waiters.shift()
    if (w !== undefined) w(frame); else inbox.push(frame)
  })
  await once(ws, 'open')
  return { ws, next: async () => inbox.shift() ?? await new Promise((resolve) => waiters.push(resolve)) }
}

t.test('the coordinator answers malformed, oversized and unknown frames with error frames and stays up', async (t) => {
  const coordinator = await startCoordinator(t)
  const token = (await coordinator.api.post('/api/v1/enrollment-tokens', {})).body.token
  const enrolled = await apiClient(coordinator.url, null).post('/api/v1/agents/enroll', { token })
  const { ws, next } = await rawAgentSocket(coordinator.url, enrolled.body.agentCredential)
  t.teardown(() => ws.terminate())

  ws.send('{this is not json')
  t.match(await next(), { type: 'error', code: 'FRAME_INVALID' })
  ws.send(JSON.stringify({ type: 'shell.exec', id: 'x1', cmd: 'rm -rf /' }))
  t.match(await next(), { type: 'error', code: 'FRAME_UNKNOWN_TYPE', refId: 'x1' })
  ws.send(JSON.stringify({ type: 'hello', id: 'h0', protocolVersion: 'one' }))
  t.match(await next(), { type: 'error', code: 'FRAME_INVALID', refId: 'h0' })
  ws.send(JSON.stringify({ type: 'heartbeat', id: 'b0', padding: 'x'.repeat(MAX_FRAME_BYTES + 10) }))
  t.match(await next(), { type: 'error', code: 'FRAME_TOO_LARGE' })
  ws.send(Buffer.from([0, 1, 2]), { binary: true })
  t.match(await next(), { type: 'error', code: 'FRAME_INVALID' })
  // Before hello, a valid non-hello frame is refused too.
  ws.send(JSON.stringify({ type: 'heartbeat', id: 'b1', load: [0, 0, 0], memory: { totalBytes: 1, freeBytes: 1, agentRssBytes: 1 }, spoolFreeBytes: null, runningJobs: [] }))
  t.match(await next(), { type: 'error', refId: 'b1', message: /hello must be the first frame/ })

  // Still connected: a proper hello gets a welcome.
  t.equal(ws.readyState, WebSocket.OPEN)
  ws.send(JSON.stringify({ type: 'hello', id: 'h1', protocolVersion: PROTOCOL_VERSION, agentVersion: 'raw', hostname: 'raw', os: 'Linux', arch: 'x64', tools: {}, runningJobs: [] }))
  t.match(await next(), { type: 'welcome', serverId: enrolled.body.serverId })
  // A status report for a job that is not this server's is refused (deny by default).
  ws.send(JSON.stringify({ type: 'job.status', id: 's1', jobId: '00000000-0000-4000-8000-000000000001', status: 'completed', offsiteStatus: null, at: new Date().toISOString() }))
  t.match(await next(), { type: 'ack', ackId: 's1', ok: false, error: { code: 'NOT_FOUND' } })
  t.equal((await coordinator.api.get('/healthz')).body.ok, true)
})

t.test('a wrong protocol version is refused with a clear close code', async (t) => {
  const coordinator = await startCoordinator(t)
  const token = (await coordinator.api.post('/api/v1/enrollment-tokens', {})).body.token
  const enrolled = await apiClient(coordinator.url, null).post('/api/v1/agents/enroll', { token })
  const { ws, next } = await rawAgentSocket(coordinator.url, enrolled.body.agentCredential)
  const closed = once(ws, 'close')
  ws.send(JSON.stringify({ type: 'hello', id: 'h1', protocolVersion: PROTOCOL_VERSION + 1, agentVersion: 'future', hostname: 'x', os: 'Linux', arch: 'x64', tools: {}, runningJobs: [] }))
  t.match(await next(), { type: 'error', code: 'PROTOCOL_MISMATCH' })
  const [code] = await closed
  t.equal(code, 4409)
})

t.test('an unknown agent credential is refused at the upgrade', async (t) => {
  const coordinator = await startCoordinator(t)
  const ws = new WebSocket(`${coordinator.url.replace('http', 'ws')}/agent/ws`, { headers: { authorization: 'Bearer cpa_forged' } })
  ws.on('error', () => {})
  const [, res] = await once(ws, 'unexpected-response') as [unknown, { statusCode: number, resume: () => void }]
  t.equal(res.statusCode, 401)
  res.resume()
})

t.test('the agent answers malformed coordinator frames with error frames and stays connected', async (t) => {
  // A stand-in coordinator: accepts the agent, welcomes it, then sends garbage.
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' })
  t.teardown(() => new Promise<void>((resolve) => { for (const c of wss.clients) c.terminate(); wss.close(() => resolve()) }))
  await once(wss, 'listening')
  const port = (wss.address() as AddressInfo).port
  const dir = await tempDir(t, 'cp-fake-coord')
  const configPath = path.join(dir, 'agent.json')
  await writeFile(configPath, JSON.stringify({
    coordinatorUrl: `http://127.0.0.1:${port}`, serverId: '00000000-0000-4000-8000-0000000000aa', agentCredential: 'cpa_fake',
    stateDir: path.join(dir, 'state'), spoolDir: path.join(dir, 'spool'),
  }), { mode: 0o600 })
  const received: any[] = []
  let socket: WebSocket | null = null
  wss.on('connection', (ws) => {
    socket = ws
    ws.on('message', (data: Buffer) => {
      const frame = JSON.parse(data.toString())
      received.push(frame)
      if (frame.type === 'hello') {
        ws.send(JSON.stringify({ type: 'welcome', id: 'w1', serverId: '00000000-0000-4000-8000-0000000000aa', coordinatorVersion: 'fake', heartbeatIntervalMs: 200, cancelJobs: [] }))
        ws.send('not json at all')
        ws.send(JSON.stringify({ type: 'job.run', id: 'r1', job: { kind: 'backup', jobId: 'nope' } }))
        ws.send(JSON.stringify({ type: 'format.disk', id: 'f1' }))
      }
    })
  })
  const agent = spawn(process.execPath, [AGENT_BIN, 'run', '--config', configPath], { env: { ...process.env, CLOUDPILOT_ALLOW_ROOT: '1', LOG_LEVEL: 'warn' }, stdio: 'ignore' })
  t.teardown(() => { agent.kill('SIGKILL') })
  const errors = await waitFor('three error frames from the agent', () => {
    const e = received.filter((f) => f.type === 'error')
    return e.length >= 3 ? e : undefined
  })
  t.same(errors.map((e: any) => e.code).sort(), ['FRAME_INVALID', 'FRAME_INVALID', 'FRAME_UNKNOWN_TYPE'])
  t.equal(errors.find((e: any) => e.code === 'FRAME_UNKNOWN_TYPE').refId, 'f1')
  await waitFor('a heartbeat after the garbage', () => received.some((f) => f.type === 'heartbeat'))
  t.equal(agent.exitCode, null, 'agent still running')
  t.equal((socket as WebSocket | null)?.readyState, WebSocket.OPEN, 'and still connected')
})
