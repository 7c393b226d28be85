import t from 'tap'
import { sql } from 'drizzle-orm'
import { inProcessCoordinator, STORE_KINDS } from './helpers/in-process.ts'
import { apiClient } from './helpers/api-client.ts'

const SECRET = 'S3cr3t-must-not-leak-9f8e7d'
const DB_PASSWORD = 'pg-pass-never-returned-123'

for (const store of STORE_KINDS) {
  t.test(`API resources on ${store}`, async (t) => {
    const { coordinator, url, api } = await inProcessCoordinator(t, store)

    t.test('requests without or with a wrong token are 401 UNAUTHORIZED', async (t) => {
      const anon = await apiClient(url, null).get('/api/v1/servers')
      t.equal(anon.status, 401)
      t.equal(anon.body.error.code, 'UNAUTHORIZED')
      t.match(anon.body.error.hint, /Bearer/)
      const wrong = await apiClient(url, 'cpk_wrong').get('/api/v1/servers')
      t.equal(wrong.status, 401)
    })

    t.test('health, docs and metrics answer', async (t) => {
      t.same((await api.get('/healthz')).body, { ok: true, agentsConnected: 0 })
      t.equal((await api.raw('/docs/json')).status, 200)
      const metrics = await (await api.raw('/metrics')).text()
      t.match(metrics, /cloudpilot_agents_connected 0/)
    })

    let serverId = ''
    t.test('enrollment tokens are single-use and expire', async (t) => {
      const created = await api.post('/api/v1/enrollment-tokens', { name: 'web-1' })
      t.equal(created.status, 201)
      t.match(created.body.token, /^cpe_/)
      t.match(created.body.installCommand, new RegExp(`^curl -fsSL ${url}/install.sh \\| sudo bash -s -- --token ${created.body.token}$`))
      const anon = apiClient(url, null)
      const enrolled = await anon.post('/api/v1/agents/enroll', { token: created.body.token, hostname: 'web-1.example' })
      t.equal(enrolled.status, 201)
      t.match(enrolled.body.agentCredential, /^cpa_/)
      serverId = enrolled.body.serverId
      const again = await anon.post('/api/v1/agents/enroll', { token: created.body.token })
      t.equal(again.status, 401)
      t.equal(again.body.error.code, 'ENROLLMENT_TOKEN_USED')
      const unknown = await anon.post('/api/v1/agents/enroll', { token: 'cpe_doesnotexist000' })
      t.equal(unknown.body.error.code, 'ENROLLMENT_TOKEN_INVALID')
      const short = await api.post('/api/v1/enrollment-tokens', { expiresInSeconds: 1 })
      await new Promise((resolve) => setTimeout(resolve, 1200))
      const expired = await anon.post('/api/v1/agents/enroll', { token: short.body.token })
      t.equal(expired.status, 401)
      t.equal(expired.body.error.code, 'ENROLLMENT_TOKEN_EXPIRED')
      // Only hashes are stored.
      const rows = await coordinator.database.db.execute(sql`select token_hash from enrollment_tokens`)
      t.notMatch(JSON.stringify(rows), created.body.token)
      const servers = await coordinator.database.db.execute(sql`select credential_hash from servers`)
      t.notMatch(JSON.stringify(servers), enrolled.body.agentCredential)
    })

    t.test('servers list shows the enrolled server, offline until its agent connects', async (t) => {
      const list = await api.get('/api/v1/servers')
      t.equal(list.status, 200)
      const server = list.body.items.find((s: { id: string }) => s.id === serverId)
      t.equal(server.name, 'web-1')
      t.equal(server.hostname, 'web-1.example')
      t.equal(server.status, 'offline')
      t.equal(list.body.nextCursor, null)
    })

    let destinationId = ''
    t.test('destinations: credentials are write-only and encrypted at rest', async (t) => {
      const bad = await api.post('/api/v1/destinations', { name: 'x', type: 's3', config: { region: 'us-east-1' }, credentials: {} })
      t.equal(bad.status, 400)
      t.equal(bad.body.error.code, 'VALIDATION_FAILED')
      t.match(bad.body.error.message, /bucket/)
      const created = await api.post('/api/v1/destinations', {
        name: 'spaces', type: 's3',
        config: { bucket: 'backups', region: 'nyc3', endpoint: 'https://nyc3.digitaloceanspaces.com' },
        credentials: { accessKeyId: 'AKIAEXAMPLE', secretAccessKey: SECRET },
      })
      t.equal(created.status, 201)
      destinationId = created.body.id
      t.equal(created.body.hasCredentials, true)
      t.equal(created.body.active, true)
      t.notMatch(JSON.stringify(created.body), SECRET)
      t.notOk('credentials' in created.body)
      const fetched = await api.get(`/api/v1/destinations/${destinationId}`)
      t.notMatch(JSON.stringify(fetched.body), SECRET)
      const listed = await api.get('/api/v1/destinations')
      t.notMatch(JSON.stringify(listed.body), SECRET)
      const raw = await coordinator.database.db.execute(sql`select credentials_enc from destinations`)
      t.notMatch(JSON.stringify(raw), SECRET, 'not stored in plaintext')
      t.match(JSON.stringify(raw), /v1\./, 'stored as AES-GCM ciphertext')
      const patched = await api.patch(`/api/v1/destinations/${destinationId}`, { active: false })
      t.equal(patched.body.active, false)
      const unknownField = await api.patch(`/api/v1/destinations/${destinationId}`, { colour: 'red' })
      t.equal(unknownField.status, 400)
    })

    let planId = ''
    t.test('plans: the database password is write-only and encrypted; shapes are validated', async (t) => {
      const base = {
        name: 'shop db', serverId, type: 'database',
        source: { engine: 'postgresql', host: '127.0.0.1', port: 5432, username: 'backup', password: DB_PASSWORD, databases: ['shop'] },
      }
      const badCron = await api.post('/api/v1/plans', { ...base, schedule: 'every day' })
      t.equal(badCron.status, 400)
      t.equal(badCron.body.error.code, 'VALIDATION_FAILED')
      const badSource = await api.post('/api/v1/plans', { ...base, source: { engine: 'oracle', databases: ['x'] } })
      t.equal(badSource.status, 400)
      const noWhere = await api.post('/api/v1/plans', { ...base, keepLocal: false })
      t.equal(noWhere.status, 400)
      t.match(noWhere.body.error.message, /keepLocal/)
      const snapshot = await api.post('/api/v1/plans', { ...base, type: 'snapshot', source: { provider: 'hetzner', volumeId: 'v1' } })
      t.equal(snapshot.status, 400)
      t.equal(snapshot.body.error.code, 'UNSUPPORTED', 'snapshot plans are refused up front, not failed at every run')
      const encrypted = await api.post('/api/v1/plans', { ...base, encryption: { recipient: 'age1' + 'q'.repeat(58) } })
      t.equal(encrypted.body.error.code, 'UNSUPPORTED', 'encryption is refused up front: never a plan that would store plaintext')
      const ghost = await api.post('/api/v1/plans', { ...base, serverId: '00000000-0000-4000-8000-000000000000' })
      t.equal(ghost.status, 404)
      const created = await api.post('/api/v1/plans', { ...base, schedule: '0 3 * * *', destinationId })
      t.equal(created.status, 201, JSON.stringify(created.body))
      planId = created.body.id
      t.notMatch(JSON.stringify(created.body), DB_PASSWORD)
      t.equal(created.body.source.hasPassword, true)
      t.equal(created.body.retentionDays, 30)
      t.equal(created.body.compression, 'gzip')
      t.equal(created.body.keepLocal, false)
      t.equal(created.body.timezone, 'UTC')
      t.same(created.body.billing, { status: 'active', failedAttempts: 0, paymentMethodId: null })
      const raw = await coordinator.database.db.execute(sql`select source, source_secret_enc from plans`)
      t.notMatch(JSON.stringify(raw), DB_PASSWORD)
      const patched = await api.patch(`/api/v1/plans/${planId}`, { retentionDays: 7, source: { engine: 'postgresql', databases: ['shop', 'blog'] } })
      t.equal(patched.body.retentionDays, 7)
      t.same(patched.body.source.databases, ['shop', 'blog'])
      t.equal(patched.body.source.hasPassword, true, 'a source patched without a password keeps the stored one')
    })

    t.test('running a plan whose destination is inactive fails fast with DESTINATION_INACTIVE', async (t) => {
      const run = await api.post(`/api/v1/plans/${planId}/run`)
      t.equal(run.status, 409)
      t.equal(run.body.error.code, 'DESTINATION_INACTIVE')
    })

    t.test('running a plan while the agent is offline records a failed row (AGENT_LOST), never a silent gap', async (t) => {
      await api.patch(`/api/v1/destinations/${destinationId}`, { active: true })
      const run = await api.post(`/api/v1/plans/${planId}/run`)
      t.equal(run.status, 201)
      t.equal(run.body.status, 'failed')
      t.equal(run.body.error.code, 'AGENT_LOST')
      t.match(run.body.error.hint, /plans\/:id\/run/)
      t.equal(run.body.trigger, 'manual')
      t.match(run.body.fileName, /^shop-db-\d{8}-\d{6}Z\.sql\.gz$/)
      const cancel = await api.post(`/api/v1/backups/${run.body.id}/cancel`)
      t.equal(cancel.status, 409)
      t.equal(cancel.body.error.code, 'NOT_CANCELLABLE')
      const list = await api.get(`/api/v1/backups?planId=${planId}&status=failed`)
      t.equal(list.body.items.length, 1)
      const none = await api.get(`/api/v1/backups?planId=${planId}&status=completed`)
      t.equal(none.body.items.length, 0)
      const download = await api.get(`/api/v1/backups/${run.body.id}/download`)
      t.equal(download.status, 409)
      t.equal(download.body.error.code, 'SOURCE_NOT_COMPLETED')
    })

    t.test('history pages with a cursor', async (t) => {
      for (let i = 0; i < 3; i++) await api.post(`/api/v1/plans/${planId}/run`)
      const first = await api.get(`/api/v1/backups?planId=${planId}&limit=2`)
      t.equal(first.body.items.length, 2)
      t.type(first.body.nextCursor, 'string')
      const second = await api.get(`/api/v1/backups?planId=${planId}&limit=2&cursor=${first.body.nextCursor}`)
      t.equal(second.body.items.length, 2)
      const ids = new Set([...first.body.items, ...second.body.items].map((b: { id: string }) => b.id))
      t.equal(ids.size, 4, 'pages do not overlap')
      const bad = await api.get('/api/v1/backups?cursor=zzz')
      t.equal(bad.status, 400)
    })

    t.test('deleting a server revokes it', async (t) => {
      const del = await api.delete(`/api/v1/servers/${serverId}`)
      t.equal(del.status, 204)
      t.equal((await api.get(`/api/v1/servers/${serverId}`)).status, 404)
    })
  })
}
