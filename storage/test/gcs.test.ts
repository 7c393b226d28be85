/**
 * The gcs driver (@google-cloud/storage) against the loopback GCS JSON API double (helpers/gcs-double.ts; there is
 * no usable GCS emulator): the conformance suite, the resumable protocol as it went over the wire, and the upload
 * rate limit.
 */
import t from 'tap'
import { GcsDriver } from '../src/gcs.ts'
import { runConformance } from './conformance.ts'
import { byteSource, drain } from './helpers/byte-source.ts'
import { startGcsDouble } from './helpers/gcs-double.ts'

const gcs = await startGcsDouble()
t.teardown(() => gcs.close())
const account = gcs.oauth.serviceAccount('backup-writer', gcs.tokenUri)
const prefix = 'cp-conformance'
const warnings: string[] = []

const open = (config: Record<string, unknown> = {}): GcsDriver => new GcsDriver(
  { bucket: 'backups', apiEndpoint: gcs.endpoint, prefix, ...config },
  { serviceAccountJson: account.json },
  { allowPrivateEndpoints: true, onWarning: (message) => { warnings.push(message) } },
  { chunkSize: 8 * 1024 * 1024 },
)

runConformance(t, 'gcs (JSON API double)', async () => open(), {
  leftovers: async () => gcs.openSessions().map((s) => `${s.bucket}/${s.name} (${s.received} bytes)`),
  partBoundary: 8 * 1024 * 1024,
})

t.test('gcs: what went over the wire', async (t) => {
  t.same([...(gcs.buckets.get('backups')?.keys() ?? [])], [], 'the bucket is empty')
  t.same(warnings, [], 'no warnings')
  const puts = gcs.requests.filter((r) => r.method === 'PUT' && /upload_id=/.test(r.url))
  t.ok(puts.some((r) => r.status === 308), 'chunks were answered 308 Resume Incomplete')
  t.ok(puts.some((r) => r.status === 200), 'a last chunk created an object')
  t.ok(gcs.cancelled.size >= 3, `interrupted puts cancelled their sessions (${gcs.cancelled.size})`)
  t.ok(gcs.oauth.issued() >= 1 && gcs.oauth.issued() <= 3, `access tokens were fetched once and reused (${gcs.oauth.issued()})`)
  t.notOk(gcs.requests.some((r) => r.status === 401), 'no request was refused for authentication')
})

t.test('gcs: a chunk the server persists only in part is resent from the server\'s offset', async (t) => {
  const driver = open()
  let partial = 0
  gcs.fault = (req) => req.method === 'PUT' && /upload_id=/.test(req.url ?? '') && partial++ === 1 ? { persistPartially: true } : undefined
  t.teardown(() => { gcs.fault = undefined })
  const src = byteSource(20 * 1024 * 1024, { chunkSize: 1024 * 1024 })
  await driver.put('partial/x.bin', src.stream)
  t.equal((await drain(await driver.get('partial/x.bin'))).sha256, src.sha256(), 'byte-exact')
  await driver.delete('partial/x.bin')
})

t.test('gcs: rateLimitBytesPerSecond holds the upload to the configured rate', async (t) => {
  const limited = open({ rateLimitBytesPerSecond: 1024 * 1024 })
  const src = byteSource(1536 * 1024, { chunkSize: 64 * 1024 })
  const started = performance.now()
  await limited.put('rate/limited.bin', src.stream)
  const seconds = (performance.now() - started) / 1000
  t.ok(seconds >= 1.3 && seconds < 5, `1.5 MiB at 1 MiB/s took ${seconds.toFixed(2)} s`)
  t.equal((await drain(await limited.get('rate/limited.bin'))).sha256, src.sha256(), 'bytes intact')
  await limited.delete('rate/limited.bin')
})
