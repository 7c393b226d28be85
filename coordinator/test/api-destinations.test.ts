import t from 'tap'
import { inProcessCoordinator, STORE_KINDS } from './helpers/in-process.ts'
import { apiClient } from './helpers/api-client.ts'
import { startS3rver } from '../../storage/test/helpers/s3rver.ts'

for (const store of STORE_KINDS) {
  t.test(`destinations API on ${store}`, async (t) => {
    const s3 = await startS3rver()
    t.teardown(() => s3.close())
    const { url, api } = await inProcessCoordinator(t, store)
    const s3Config = { bucket: s3.bucket, region: s3.region, endpoint: s3.endpoint, forcePathStyle: true }

    t.test('S3-compatible presets fill the endpoint; destination-types lists them', async (t) => {
      const types = await api.get('/api/v1/destination-types')
      const presets = types.body.items.find((i: { type: string }) => i.type === 's3').presets.map((p: { id: string }) => p.id)
      t.same(presets, ['digitalocean_spaces', 'cloudflare_r2', 'wasabi', 'minio'])
      const spaces = await api.post('/api/v1/destinations', { name: 'spaces', type: 's3', preset: { id: 'digitalocean_spaces', region: 'fra1' }, config: { bucket: 'site-backups' }, credentials: { accessKeyId: 'DO00EXAMPLE', secretAccessKey: 'x' } })
      t.equal(spaces.status, 201)
      t.same(spaces.body.config, { bucket: 'site-backups', endpoint: 'https://fra1.digitaloceanspaces.com', region: 'fra1', forcePathStyle: false })
      const r2 = await api.post('/api/v1/destinations', { name: 'r2', type: 's3', preset: { id: 'cloudflare_r2', accountId: '0123456789abcdef0123456789abcdef' }, config: { bucket: 'b' }, credentials: { accessKeyId: 'a', secretAccessKey: 'b' } })
      t.match(r2.body.config, { endpoint: 'https://0123456789abcdef0123456789abcdef.r2.cloudflarestorage.com', region: 'auto', forcePathStyle: true })
      const wrong = await api.post('/api/v1/destinations', { name: 'r2', type: 's3', preset: { id: 'cloudflare_r2' }, config: { bucket: 'b' }, credentials: { accessKeyId: 'a', secretAccessKey: 'b' } })
      t.equal(wrong.status, 400)
      t.match(wrong.body.error.message, /account id/)
    })

    t.test('destination-types lists the granted types with their schemas', async (t) => {
      const r = await api.get('/api/v1/destination-types')
      t.equal(r.status, 200)
      t.same(r.body.items.map((i: { type: string }) => i.type), ['local', 's3', 'sftp', 'azure_blob', 'gcs', 'google_drive', 'cloudinary'])
      const s3Type = r.body.items.find((i: { type: string }) => i.type === 's3')
      t.ok(s3Type.configSchema.properties.bucket, 'config schema describes the fields')
      t.ok(s3Type.credentialsSchema.properties.secretAccessKey)
    })

    t.test('a workspace may only create the destination types it was granted', async (t) => {
      const created = await api.post('/api/v1/workspaces', { name: 'agency', grantedDestinationTypes: ['s3'] })
      t.equal(created.status, 201)
      t.match(created.body.token, /^cpk_/)
      const member = apiClient(url, created.body.token)
      t.same((await member.get('/api/v1/destination-types')).body.items.map((i: { type: string }) => i.type), ['s3'])
      const refused = await member.post('/api/v1/destinations', { name: 'disk', type: 'local', config: { path: '/backups' } })
      t.equal(refused.status, 403)
      t.equal(refused.body.error.code, 'DESTINATION_TYPE_NOT_GRANTED')
      t.match(refused.body.error.hint, /ask your admin/i)
      const allowed = await member.post('/api/v1/destinations', { name: 'b', type: 's3', config: s3Config, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } })
      t.equal(allowed.status, 201)
      t.equal((await api.get(`/api/v1/destinations/${allowed.body.id}`)).status, 404, 'other workspaces do not see it')
      t.equal((await member.post('/api/v1/workspaces', { name: 'x', grantedDestinationTypes: [] })).status, 403, 'members cannot create workspaces')
      const widened = await api.patch(`/api/v1/workspaces/${created.body.workspace.id}`, { grantedDestinationTypes: ['s3', 'local'] })
      t.same(widened.body.grantedDestinationTypes, ['s3', 'local'])
      t.equal((await member.post('/api/v1/destinations', { name: 'disk', type: 'local', config: { path: '/backups' } })).status, 201)
    })

    t.test('Test Connection answers ok with latency, or the code and hint; the last result is kept', async (t) => {
      const good = await api.post('/api/v1/destinations', { name: 'good', type: 's3', config: s3Config, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } })
      const ok = await api.post(`/api/v1/destinations/${good.body.id}/test`)
      t.equal(ok.status, 200)
      t.equal(ok.body.ok, true)
      t.type(ok.body.latencyMs, 'number')
      const stored = await api.get(`/api/v1/destinations/${good.body.id}`)
      t.equal(stored.body.lastTest.ok, true)
      t.type(stored.body.lastTest.at, 'string')

      const bad = await api.post('/api/v1/destinations', { name: 'bad', type: 's3', config: s3Config, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: 'wrong-secret-value' } })
      const failed = await api.post(`/api/v1/destinations/${bad.body.id}/test`)
      t.equal(failed.body.ok, false)
      t.equal(failed.body.error.code, 'AUTH_FAILED')
      t.match(failed.body.error.hint, /trailing spaces/)
      t.notMatch(JSON.stringify(failed.body), /wrong-secret-value/)
      t.equal((await api.get(`/api/v1/destinations/${bad.body.id}`)).body.lastTest.error.code, 'AUTH_FAILED', 'GET shows the failed test')

      const missing = await api.post('/api/v1/destinations', { name: 'nobucket', type: 's3', config: { ...s3Config, bucket: 'nope' }, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } })
      t.equal((await api.post(`/api/v1/destinations/${missing.body.id}/test`)).body.error.code, 'CONTAINER_NOT_FOUND')
      const down = await api.post('/api/v1/destinations', { name: 'down', type: 's3', config: { ...s3Config, endpoint: 'http://127.0.0.1:1' }, credentials: { accessKeyId: 'a', secretAccessKey: 'b' } })
      t.equal((await api.post(`/api/v1/destinations/${down.body.id}/test`)).body.error.code, 'UNREACHABLE')
      const local = await api.post('/api/v1/destinations', { name: 'disk', type: 'local', config: { path: '/srv/backups' } })
      const noServer = await api.post(`/api/v1/destinations/${local.body.id}/test`)
      t.equal(noServer.status, 400, 'a local destination is tested on a server: it needs one')
    })
  })
}

t.test('endpoints on metadata addresses are always refused; private ones unless allowed', async (t) => {
  const { api } = await inProcessCoordinator(t, 'postgresql', { allowPrivateEndpoints: false })
  const make = (endpoint: string) => api.post('/api/v1/destinations', { name: 'x', type: 's3', config: { bucket: 'b', region: 'r', endpoint }, credentials: { accessKeyId: 'a', secretAccessKey: 'b' } })
  for (const endpoint of ['http://169.254.169.254', 'http://[fd00:ec2::254]', 'http://127.0.0.1:9000', 'http://10.1.2.3', 'http://localhost:9000']) {
    const r = await make(endpoint)
    t.equal(r.status, 400, endpoint)
    t.equal(r.body.error.code, 'ENDPOINT_NOT_ALLOWED', endpoint)
  }
  t.equal((await make('https://nyc3.digitaloceanspaces.com')).status, 201, 'a public endpoint is fine (nothing is contacted at create)')
  const sftp = await api.post('/api/v1/destinations', { name: 's', type: 'sftp', config: { host: '169.254.169.254', username: 'u', path: '/x' }, credentials: { password: 'p' } })
  t.equal(sftp.body.error.code, 'ENDPOINT_NOT_ALLOWED')
})

t.test('sftp: no pinned key and no trust-on-first-use is refused with the fingerprint to pin; opting in pins it', async (t) => {
  const { startSshd } = await import('../../storage/test/helpers/sshd.ts')
  const sshd = await startSshd()
  t.teardown(() => sshd.close())
  const { api } = await inProcessCoordinator(t, 'postgresql')
  const base = { host: sshd.host, port: sshd.port, username: sshd.username, path: sshd.root }
  const unpinned = await api.post('/api/v1/destinations', { name: 'unpinned', type: 'sftp', config: base, credentials: { privateKey: sshd.privateKey } })
  const refused = await api.post(`/api/v1/destinations/${unpinned.body.id}/test`)
  t.equal(refused.body.ok, false)
  t.match(refused.body.error.message, sshd.hostKeyFingerprint, 'the message names the fingerprint seen')
  const tofu = await api.post('/api/v1/destinations', { name: 'tofu', type: 'sftp', config: { ...base, trustOnFirstUse: true }, credentials: { privateKey: sshd.privateKey } })
  const accepted = await api.post(`/api/v1/destinations/${tofu.body.id}/test`)
  t.equal(accepted.body.ok, true)
  t.equal(accepted.body.hostKeyFingerprint, sshd.hostKeyFingerprint)
  const after = await api.get(`/api/v1/destinations/${tofu.body.id}`)
  t.equal(after.body.config.hostKeyFingerprint, sshd.hostKeyFingerprint, 'the key seen first is pinned')
  t.equal(after.body.config.trustOnFirstUse, false, 'and trust-on-first-use is spent')
  const wrongKey = await api.post('/api/v1/destinations', { name: 'wrong', type: 'sftp', config: { ...base, hostKeyFingerprint: 'SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' }, credentials: { privateKey: sshd.privateKey } })
  const mismatch = await api.post(`/api/v1/destinations/${wrongKey.body.id}/test`)
  t.equal(mismatch.body.ok, false)
  t.equal(mismatch.body.error.code, 'AUTH_FAILED')
})
