/**
 * The cloudinary driver (REST over fetch) against the loopback Cloudinary double (helpers/cloudinary-double.ts;
 * no emulator exists): the conformance suite (Cloudinary stores no empty files), chunked uploads as they went
 * over the wire, how keys map to public IDs, and the upload rate limit.
 */
import t from 'tap'
import { Readable } from 'node:stream'
import { CloudinaryDriver } from '../src/cloudinary.ts'
import { runConformance } from './conformance.ts'
import { byteSource, drain, readAll } from './helpers/byte-source.ts'
import { startCloudinaryDouble } from './helpers/cloudinary-double.ts'

const cloud = await startCloudinaryDouble()
t.teardown(() => cloud.close())
const MiB = 1024 * 1024

const open = (config: Record<string, unknown> = {}): CloudinaryDriver => new CloudinaryDriver(
  { cloudName: cloud.cloudName, folder: 'cloudpilot', apiUrl: cloud.apiUrl, deliveryUrl: cloud.deliveryUrl, ...config },
  { apiKey: cloud.apiKey, apiSecret: cloud.apiSecret },
  { allowPrivateEndpoints: true },
  { chunkSize: 8 * MiB },
)

runConformance(t, 'cloudinary (REST double)', async () => open(), { partBoundary: 8 * MiB, emptyObjects: false })

t.test('cloudinary: what the conformance run left', async (t) => {
  t.same([...cloud.assets.keys()], [], 'no assets left')
  const uploads = cloud.server.requests.filter((r) => r.method === 'POST' && r.url.endsWith('/raw/upload'))
  t.ok(uploads.length > 20, `uploads went in chunks (${uploads.length} requests)`)
  t.ok(cloud.server.requests.every((r) => r.status !== 401), 'no request was refused for its signature')
})

t.test('cloudinary: assets are authenticated raw files named after the key; a 20 MB+ object goes in several chunks', async (t) => {
  const driver = open()
  const before = cloud.server.requests.length
  const src = byteSource(21 * MiB)
  await driver.put('server 1/db & co/2024-05-01+02.sql.gz', src.stream)
  const chunks = cloud.server.requests.slice(before).filter((r) => r.url.endsWith('/raw/upload'))
  t.equal(chunks.length, 3, '21 MiB in 3 chunks of 8 MiB')
  const [asset] = [...cloud.assets.values()]
  t.equal(asset?.type, 'authenticated', 'delivery type authenticated: never public')
  t.equal(asset?.publicId, 'cloudpilot/server~201/db~20~26~20co/2024-05-01~2B02.sql.gz', 'refused characters escaped, the folder in front')
  t.same((await driver.list('server 1/')).items.map((i) => i.key), ['server 1/db & co/2024-05-01+02.sql.gz'], 'listed under its key')
  t.equal((await drain(await driver.get('server 1/db & co/2024-05-01+02.sql.gz'))).sha256, src.sha256(), 'read back through a signed delivery URL')
  await driver.delete('server 1/db & co/2024-05-01+02.sql.gz')
})

t.test('cloudinary: an overwritten asset is read in its new version', async (t) => {
  const driver = open()
  await driver.put('v/x.txt', Readable.from([Buffer.from('first')]))
  await driver.get('v/x.txt')
  await driver.put('v/x.txt', Readable.from([Buffer.from('second')]))
  const before = cloud.server.requests.length
  t.equal((await readAll(await driver.get('v/x.txt'))).toString(), 'second')
  const delivery = cloud.server.requests.slice(before).find((r) => r.url.includes('/raw/authenticated/s--'))
  t.match(delivery?.url, new RegExp(`/v${cloud.assets.get('authenticated/cloudpilot/v/x.txt')?.version ?? 0}/`), 'the delivery URL names the current version (no stale CDN copy)')
  await driver.delete('v/x.txt')
})

t.test('cloudinary: rateLimitBytesPerSecond holds the upload to the configured rate', async (t) => {
  const limited = open({ rateLimitBytesPerSecond: 1024 * 1024 })
  const src = byteSource(1536 * 1024, { chunkSize: 64 * 1024 })
  const started = performance.now()
  await limited.put('rate/limited.bin', src.stream)
  const seconds = (performance.now() - started) / 1000
  t.ok(seconds >= 1.3 && seconds < 5, `1.5 MiB at 1 MiB/s took ${seconds.toFixed(2)} s`)
  t.equal((await drain(await limited.get('rate/limited.bin'))).sha256, src.sha256(), 'bytes intact')
  await limited.delete('rate/limited.bin')
})
