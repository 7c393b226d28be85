import t from 'tap'
import { createHash } from 'node:crypto'
import { mkdir, writeFile } from 'node:fs/promises'
import path from 'node:path'
import WebSocket from 'ws'
import { PROTOCOL_VERSION } from '@cloudpilot/protocol'
import { inProcessCoordinator, STORE_KINDS } from './helpers/in-process.ts'
import { apiClient } from './helpers/api-client.ts'
import { tempDir } from './helpers/processes.ts'
import { waitFor } from './helpers/wait-for.ts'

/** A connected stand-in agent speaking the real protocol over the real WebSocket: records the frames it receives. */
async function connectAgent (url: string, credential: string, agentVersion: string): Promise<{ ws: WebSocket, frames: any[], send: (f: object) => void, close: () => Promise<void> }> {
  const frames: any[] = []
  const ws = new WebSocket(`${url.replace('http', 'ws')}/agent/ws`, { headers: { authorization: `Bearer ${credential}` } })
  ws.on('message', (data) => { frames.push(JSON.parse(data.toString())) })
  await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject) })
  let n = 0
  const send = (f: object): void => { ws.send(JSON.stringify({ id: `test-${++n}`, ...f })) }
  send({ type: 'hello', protocolVersion: PROTOCOL_VERSION, agentVersion, hostname: 'web-1', os: 'Linux test', arch: 'x64', tools: {}, runningJobs: [] })
  await waitFor('welcome', () => frames.some((f) => f.type === 'welcome'))
  return {
    ws, frames, send,
    close: async () => { ws.close(); await new Promise((resolve) => ws.once('close', resolve)) },
  }
}

for (const store of STORE_KINDS) {
  t.test(`agent package, install script and upgrades on ${store}`, async (t) => {
    const packageDir = await tempDir(t, 'cp-packages')
    const payload = Buffer.from('a stand-in for the agent tarball')
    const sha256 = createHash('sha256').update(payload).digest('hex')
    const publish = async (version: string): Promise<string> => {
      const name = `cloudpilot-agent-${version}-linux-x64.tar.gz`
      await mkdir(packageDir, { recursive: true })
      await writeFile(path.join(packageDir, name), payload)
      await writeFile(path.join(packageDir, 'manifest.json'), JSON.stringify({ version, nodeVersion: '24.0.0', builtAt: new Date().toISOString(), files: { x64: { name, sha256, size: payload.length } } }))
      return name
    }
    const firstName = await publish('1.0.0')
    const { url, api } = await inProcessCoordinator(t, store, { agentPackageDir: packageDir })
    const anon = apiClient(url, null)

    t.test('the package and the install script are public; only listed files are served', async (t) => {
      const manifest = await anon.get('/agent/manifest.json')
      t.equal(manifest.status, 200)
      t.match(manifest.body, { version: '1.0.0', files: { x64: { name: firstName, sha256, size: payload.length } } })
      const text = await (await anon.raw('/agent/manifest.txt')).text()
      t.equal(text, `version 1.0.0\nx64 ${firstName} ${sha256} ${payload.length}\n`)
      const file = await anon.raw(`/agent/files/${firstName}`)
      t.equal(file.status, 200)
      t.same(Buffer.from(await file.arrayBuffer()), payload)
      for (const bad of ['manifest.json', '..%2Fmanifest.json', 'cloudpilot-agent-0.0.1-linux-x64.tar.gz']) {
        t.equal((await anon.raw(`/agent/files/${bad}`)).status, 404, `${bad} is not served`)
      }
      const script = await (await anon.raw('/install.sh')).text()
      t.match(script, `local coordinator_default='${url}'`, 'the coordinator fills in its URL')
      t.equal(script.trimEnd().split('\n').at(-1), 'main "$@" --script-complete')
    })

    t.test('upgrades: refused while offline, sent to a connected agent, settled by its report or its next hello', async (t) => {
      const token = (await api.post('/api/v1/enrollment-tokens', {})).body.token
      const enrolled = await anon.post('/api/v1/agents/enroll', { token, hostname: 'web-1' })
      const { serverId, agentCredential } = enrolled.body

      const offline = await api.post(`/api/v1/servers/${serverId}/upgrade`, {})
      t.equal(offline.status, 503)
      t.equal(offline.body.error.code, 'AGENT_UNREACHABLE')
      t.equal((await api.post('/api/v1/servers/00000000-0000-4000-8000-000000000000/upgrade', {})).status, 404)
      const wrong = await api.post(`/api/v1/servers/${serverId}/upgrade`, { version: '2.0.0' })
      t.equal(wrong.status, 409)
      t.match(wrong.body.error.message, /serves agent 1\.0\.0, not 2\.0\.0/)
      t.equal((await anon.post(`/api/v1/servers/${serverId}/upgrade`, {})).status, 401)

      const agent = await connectAgent(url, agentCredential, '0.9.0')
      const asked = await api.post(`/api/v1/servers/${serverId}/upgrade`, { version: '1.0.0' })
      t.equal(asked.status, 202)
      t.same(asked.body, { serverId, outcome: 'requested', targetVersion: '1.0.0' })
      const frame = await waitFor('agent.upgrade frame', () => agent.frames.find((f) => f.type === 'agent.upgrade'))
      t.match(frame, { version: '1.0.0', url: `/agent/files/${firstName}`, sha256, size: payload.length })
      let server = (await api.get(`/api/v1/servers/${serverId}`)).body
      t.match(server.upgrade, { status: 'pending', fromVersion: '0.9.0', targetVersion: '1.0.0', finishedAt: null, error: null })

      agent.send({ type: 'agent.upgrade.status', status: 'in_progress', fromVersion: '0.9.0', toVersion: '1.0.0' })
      await waitFor('in_progress', async () => (await api.get(`/api/v1/servers/${serverId}`)).body.upgrade.status === 'in_progress')
      // The agent restarts into the new version: its hello settles the upgrade.
      await agent.close()
      const upgraded = await connectAgent(url, agentCredential, '1.0.0')
      server = await waitFor('completed', async () => {
        const s = (await api.get(`/api/v1/servers/${serverId}`)).body
        return s.upgrade.status === 'completed' ? s : undefined
      })
      t.equal(server.agentVersion, '1.0.0')
      t.type(server.upgrade.finishedAt, 'string')
      const current = await api.post(`/api/v1/servers/${serverId}/upgrade`, {})
      t.equal(current.body.outcome, 'current')

      // Upgrade all: a failure reported by the agent lands on the server with its code.
      const otherToken = (await api.post('/api/v1/enrollment-tokens', {})).body.token
      const other = (await anon.post('/api/v1/agents/enroll', { token: otherToken, hostname: 'web-2' })).body
      await publish('1.1.0')
      const all = await api.post('/api/v1/servers/upgrade', {})
      t.equal(all.status, 202)
      t.same(all.body.items.map((i: any) => [i.serverId, i.outcome]).sort(), [[serverId, 'requested'], [other.serverId, 'unreachable']].sort())
      await waitFor('second agent.upgrade', () => upgraded.frames.find((f) => f.type === 'agent.upgrade' && f.version === '1.1.0'))
      upgraded.send({
        type: 'agent.upgrade.status', status: 'failed', fromVersion: '1.0.0', toVersion: '1.1.0',
        error: { code: 'UPGRADE_FAILED', message: 'agent 1.1.0 did not come up; rolled back to 1.0.0' },
      })
      server = await waitFor('failed', async () => {
        const s = (await api.get(`/api/v1/servers/${serverId}`)).body
        return s.upgrade.status === 'failed' ? s : undefined
      })
      t.match(server.upgrade, { targetVersion: '1.1.0', error: { code: 'UPGRADE_FAILED', message: /rolled back/, hint: /upgrade again/ } })
      t.equal(server.agentVersion, '1.0.0')

      // Uninstall: the agent revokes its own server with its credential.
      t.equal((await anon.post('/api/v1/agents/revoke')).status, 401)
      const revoked = await apiClient(url, agentCredential).post('/api/v1/agents/revoke')
      t.equal(revoked.status, 204)
      await new Promise((resolve) => upgraded.ws.readyState === WebSocket.CLOSED ? resolve(null) : upgraded.ws.once('close', resolve))
      t.equal((await api.get(`/api/v1/servers/${serverId}`)).status, 404)
      const again = await apiClient(url, agentCredential).post('/api/v1/agents/revoke')
      t.equal(again.status, 401)
      t.equal(again.body.error.code, 'AGENT_CREDENTIAL_INVALID')
    })
  })
}
