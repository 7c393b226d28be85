/**
 * The google_drive driver (Drive v3 REST over fetch) against the loopback Drive double (helpers/drive-double.ts;
 * no Drive emulator exists): the conformance suite with a service account and with a user's refresh token, how
 * keys map to files, and the upload rate limit.
 */
import t from 'tap'
import { Readable } from 'node:stream'
import { GoogleDriveDriver } from '../src/google-drive.ts'
import { runConformance } from './conformance.ts'
import { byteSource, drain, readAll } from './helpers/byte-source.ts'
import { startDriveDouble } from './helpers/drive-double.ts'

const drive = await startDriveDouble()
t.teardown(() => drive.close())
const account = drive.oauth.serviceAccount('backup-writer', drive.tokenUri)
const user = drive.oauth.oauthClient()
const folderId = drive.folder('CloudPilot backups', { writers: [account.clientEmail, user.clientId], inSharedDrive: true })

const open = (config: Record<string, unknown> = {}): GoogleDriveDriver => new GoogleDriveDriver(
  { folderId, rootUrl: drive.rootUrl, ...config },
  { serviceAccountJson: account.json },
  { allowPrivateEndpoints: true },
  { chunkSize: 8 * 1024 * 1024 },
)

runConformance(t, 'google_drive (Drive v3 double)', async () => open(), { partBoundary: 8 * 1024 * 1024 })

t.test('google_drive: the folder after the conformance run', async (t) => {
  t.same(drive.filesIn(folderId).map((f) => f.name), [], 'no files left')
  const chunkAnswers = drive.server.requests.filter((r) => r.method === 'PUT' && /upload_id=/.test(r.url))
  t.ok(chunkAnswers.some((r) => r.status === 308), 'chunks were answered 308 Resume Incomplete')
  t.ok(drive.oauth.issued() <= 2, `one access token reused (${drive.oauth.issued()})`)
})

t.test('google_drive: a key is one file in the folder, named exactly as the key; an overwrite is a new revision', async (t) => {
  const driver = open()
  await driver.put('server-1/plan-2/2024-05-01.sql.gz', Readable.from([Buffer.from('v1')]), { contentType: 'application/gzip' })
  const [file] = drive.filesIn(folderId)
  t.equal(file?.name, 'server-1/plan-2/2024-05-01.sql.gz', 'no subfolders: the name holds the whole key')
  t.equal(file?.mimeType, 'application/gzip', 'content type kept')
  await driver.put('server-1/plan-2/2024-05-01.sql.gz', Readable.from([Buffer.from('version 2')]))
  const after = drive.filesIn(folderId)
  t.equal(after.length, 1, 'still one file')
  t.equal(after[0]?.id, file?.id, 'the same file (a new revision)')
  t.equal((await readAll(await driver.get('server-1/plan-2/2024-05-01.sql.gz'))).toString(), 'version 2')
  await driver.delete('server-1/plan-2/2024-05-01.sql.gz')
})

t.test('google_drive: two files with one name (made by two concurrent puts): the newest is read, delete removes both', async (t) => {
  const driver = open()
  await Promise.all([driver.put('dup/x.gz', Readable.from([Buffer.from('one')])), driver.put('dup/x.gz', Readable.from([Buffer.from('two!')]))])
  const listed = await driver.list('dup/')
  t.equal(listed.items.length, 1, 'listed once')
  t.equal((await readAll(await driver.get('dup/x.gz'))).length, (await driver.stat('dup/x.gz'))?.sizeBytes, 'get and stat agree on one of them')
  await driver.delete('dup/x.gz')
  t.same(drive.filesIn(folderId), [], 'all removed')
})

t.test('google_drive: a download redirected to a content host is followed, without the token', async (t) => {
  const driver = open()
  await driver.put('redirect/x.bin', Readable.from([Buffer.from('0123456789')]))
  drive.redirectDownloads = true
  t.teardown(() => { drive.redirectDownloads = false })
  t.equal((await readAll(await driver.get('redirect/x.bin'))).toString(), '0123456789', 'whole')
  t.equal((await readAll(await driver.get('redirect/x.bin', { range: { start: 2, end: 4 } }))).toString(), '234', 'ranged')
  drive.redirectDownloads = false
  await driver.delete('redirect/x.bin')
})

t.test('google_drive: a user\'s OAuth refresh token works as well', async (t) => {
  const driver = new GoogleDriveDriver({ folderId, rootUrl: drive.rootUrl, tokenUrl: drive.tokenUri }, { clientId: user.clientId, clientSecret: user.clientSecret, refreshToken: user.refreshToken }, { allowPrivateEndpoints: true })
  t.ok((await driver.test()).latencyMs >= 0, 'test() passes')
  const src = byteSource(10 * 1024 * 1024)
  await driver.put('oauth/x.bin', src.stream)
  t.equal((await drain(await driver.get('oauth/x.bin'))).sha256, src.sha256(), 'round trip')
  await driver.delete('oauth/x.bin')
})

t.test('google_drive: rateLimitBytesPerSecond holds the upload to the configured rate', async (t) => {
  const limited = open({ rateLimitBytesPerSecond: 1024 * 1024 })
  const src = byteSource(1536 * 1024, { chunkSize: 64 * 1024 })
  const started = performance.now()
  await limited.put('rate/limited.bin', src.stream)
  const seconds = (performance.now() - started) / 1000
  t.ok(seconds >= 1.3 && seconds < 5, `1.5 MiB at 1 MiB/s took ${seconds.toFixed(2)} s`)
  t.equal((await drain(await limited.get('rate/limited.bin'))).sha256, src.sha256(), 'bytes intact')
  await limited.delete('rate/limited.bin')
})
