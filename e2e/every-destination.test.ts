import t, { type Test } from 'tap'
import path from 'node:path'
import { startCoordinator, startAgent, waitOnline, tempDir, type CoordinatorProcess } from '../coordinator/test/helpers/processes.ts'
import { psql, tempPostgresDatabase, randomName } from '../coordinator/test/helpers/databases.ts'
import { startS3rver } from '../storage/test/helpers/s3rver.ts'
import { startSshd } from '../storage/test/helpers/sshd.ts'
import { startAzurite } from '../storage/test/helpers/azurite.ts'
import { startGcsDouble } from '../storage/test/helpers/gcs-double.ts'
import { startDriveDouble } from '../storage/test/helpers/drive-double.ts'
import { startCloudinaryDouble } from '../storage/test/helpers/cloudinary-double.ts'
import { createPlan, downloadBackup, gunzipInto, watchBackup } from './helpers.ts'

/**
 * Every destination type the product offers, through the real coordinator and agent: Test Connection (on the
 * coordinator, or on the server for `local`), a PostgreSQL backup plan writing to it, the download read back
 * from it, and a restore by hand with gunzip | psql. S3 is s3rver, SFTP a real sshd, Azure Blob azurite; GCS,
 * Google Drive and Cloudinary are loopback servers implementing their documented REST protocols.
 */

interface DestinationUnderTest { type: string, config: Record<string, unknown>, credentials: Record<string, unknown>, close: () => Promise<void> }

const makers: Record<string, (t: Test) => Promise<DestinationUnderTest>> = {
  local: async (t) => ({ type: 'local', config: { path: await tempDir(t, 'cp-dest-local') }, credentials: {}, close: async () => {} }),
  s3: async () => {
    const s = await startS3rver()
    return { type: 's3', config: { bucket: s.bucket, region: s.region, endpoint: s.endpoint, forcePathStyle: true, prefix: 'fleet' }, credentials: { accessKeyId: s.accessKeyId, secretAccessKey: s.secretAccessKey }, close: s.close }
  },
  sftp: async () => {
    const s = await startSshd()
    return { type: 'sftp', config: { host: s.host, port: s.port, username: s.username, path: s.root, hostKeyFingerprint: s.hostKeyFingerprint }, credentials: { privateKey: s.privateKey }, close: s.close }
  },
  azure_blob: async () => {
    const a = await startAzurite()
    return { type: 'azure_blob', config: { container: a.container, prefix: 'fleet' }, credentials: { connectionString: a.connectionString }, close: a.close }
  },
  gcs: async () => {
    const g = await startGcsDouble()
    const account = g.oauth.serviceAccount('backup-writer', g.tokenUri)
    return { type: 'gcs', config: { bucket: 'backups', apiEndpoint: g.endpoint }, credentials: { serviceAccountJson: account.json }, close: g.close }
  },
  google_drive: async () => {
    const d = await startDriveDouble()
    const account = d.oauth.serviceAccount('backup-writer', d.tokenUri)
    const folderId = d.folder('CloudPilot', { writers: [account.clientEmail], inSharedDrive: true })
    return { type: 'google_drive', config: { folderId, rootUrl: d.rootUrl }, credentials: { serviceAccountJson: account.json }, close: d.close }
  },
  cloudinary: async () => {
    const c = await startCloudinaryDouble()
    return { type: 'cloudinary', config: { cloudName: c.cloudName, folder: 'cloudpilot', apiUrl: c.apiUrl, deliveryUrl: c.deliveryUrl }, credentials: { apiKey: c.apiKey, apiSecret: c.apiSecret }, close: c.close }
  },
}

t.test('backups to every destination type restore byte for byte', async (t) => {
  const coordinator: CoordinatorProcess = await startCoordinator(t)
  const agent = await startAgent(t, coordinator)
  await waitOnline(coordinator, agent.serverId)
  const source = await tempPostgresDatabase(t, 'cp_every')
  await psql(source.name, "create table notes (id int primary key, body text); insert into notes select g, repeat('ünïcødé ' || g, 20) from generate_series(1, 20000) g;")
  const checksum = "select count(*) || ':' || md5(string_agg(id || body, ',' order by id)) from notes"
  const expected = await psql(source.name, checksum)

  for (const [type, make] of Object.entries(makers)) {
    t.test(type, async (t) => {
      const d = await make(t)
      t.teardown(d.close)
      const created = await coordinator.api.post('/api/v1/destinations', { name: `${type} destination`, type: d.type, config: d.config, credentials: d.credentials })
      t.equal(created.status, 201, 'destination created')
      const test = await coordinator.api.post(`/api/v1/destinations/${created.body.id}/test`, type === 'local' ? { serverId: agent.serverId } : {})
      t.same({ status: test.status, ok: test.body.ok, error: test.body.error }, { status: 200, ok: true, error: undefined }, 'Test Connection passes')
      const planId = await createPlan(coordinator, {
        serverId: agent.serverId, type: 'database', destinationId: created.body.id,
        source: { engine: 'postgresql', host: '127.0.0.1', port: 5432, username: 'postgres', databases: [source.name] },
      })
      const run = await coordinator.api.post(`/api/v1/plans/${planId}/run`)
      const { final: b } = await watchBackup(coordinator, run.body.id)
      t.equal(b.status, 'completed', JSON.stringify(b.error))
      t.equal(b.offsiteStatus, 'uploaded')
      const file = path.join(await tempDir(t, 'cp-every-dl'), b.fileName)
      const dl = await downloadBackup(coordinator, b.id, file)
      t.equal(dl.status, 200, 'download read back from the destination')
      t.equal(dl.sha256, b.sha256, 'the bytes are the archive as made')
      const target = randomName('cp_every_restore')
      await psql('postgres', `create database "${target}"`)
      t.teardown(() => psql('postgres', `drop database if exists "${target}" with (force)`))
      const restored = await gunzipInto(file, 'psql', ['-h', '127.0.0.1', '-U', 'postgres', '-d', target, '-v', 'ON_ERROR_STOP=1', '-q', '-X'])
      t.equal(restored.code, 0, restored.stderr)
      t.equal(await psql(target, checksum), expected, 'restored rows equal the source')
    })
  }
})
