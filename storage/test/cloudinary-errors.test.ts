/**
 * The cloudinary driver's failure codes against the Cloudinary double (helpers/cloudinary-double.ts) with faults
 * injected: refused keys and signatures, an unknown cloud, unreachable and hung endpoints, TLS, retries, plan
 * limits, abort at the last chunk, SSRF, and no secret in any message.
 */
import t from 'tap'
import { Readable } from 'node:stream'
import { CloudPilotError } from '@cloudpilot/protocol'
import type { CloudinaryConfig, CloudinaryCredentials } from '@cloudpilot/protocol'
import { CloudinaryDriver, type CloudinaryTuning } from '../src/cloudinary.ts'
import { byteSource, drain } from './helpers/byte-source.ts'
import { startCloudinaryDouble } from './helpers/cloudinary-double.ts'
import { freePort } from './helpers/sshd.ts'
import { selfSignedCert } from './helpers/tls-cert.ts'

const MiB = 1024 * 1024
const cloud = await startCloudinaryDouble()
t.teardown(() => cloud.close())
const FAST: Partial<CloudinaryTuning> = { chunkSize: 5 * MiB, timeoutMs: 5000, retry: { attempts: 3, baseDelayMs: 20, maxDelayMs: 100 } }
const WRONG_SECRET = 'wrong-Secret-NeverShow-0123456789'
const seen: unknown[] = []

function open (config: Partial<CloudinaryConfig> = {}, credentials: CloudinaryCredentials = { apiKey: cloud.apiKey, apiSecret: cloud.apiSecret }, tuning: Partial<CloudinaryTuning> = FAST, allowPrivateEndpoints = true): CloudinaryDriver {
  return new CloudinaryDriver({ cloudName: cloud.cloudName, apiUrl: cloud.apiUrl, deliveryUrl: cloud.deliveryUrl, ...config }, credentials, { allowPrivateEndpoints }, tuning)
}

async function failure (promise: Promise<unknown>): Promise<CloudPilotError> {
  try {
    await promise
  } catch (err) {
    seen.push(err)
    if (err instanceof CloudPilotError) return err
    throw err
  }
  throw new Error('expected a rejection')
}

async function requestsDuring (fn: () => Promise<unknown>): Promise<typeof cloud.server.requests> {
  const before = cloud.server.requests.length
  await fn()
  return cloud.server.requests.slice(before)
}

const everyCall = (driver: CloudinaryDriver): Array<[string, () => Promise<unknown>]> => [
  ['put (one chunk)', () => driver.put('x/small.gz', Readable.from([Buffer.from('x')]))],
  ['put (several chunks)', () => driver.put('x/large.gz', byteSource(12 * MiB).stream)],
  ['get', () => driver.get('x/small.gz')],
  ['stat', () => driver.stat('x/small.gz')],
  ['list', () => driver.list('x/')],
  ['delete', () => driver.delete('x/small.gz')],
  ['test()', () => driver.test()],
]

t.test('a wrong API secret or key: AUTH_FAILED on every call, never retried', async (t) => {
  for (const [label, credentials, pattern] of [
    ['wrong secret', { apiKey: cloud.apiKey, apiSecret: WRONG_SECRET }, /Invalid Signature|Invalid credentials/],
    ['unknown key', { apiKey: '999999999999999', apiSecret: cloud.apiSecret }, /Unknown API key/],
  ] as Array<[string, CloudinaryCredentials, RegExp]>) {
    const driver = open({}, credentials)
    for (const [name, call] of everyCall(driver)) {
      let err: CloudPilotError | undefined
      const requests = await requestsDuring(async () => { err = await failure(call()) })
      t.equal(err?.code, 'AUTH_FAILED', `${label}: ${name}: AUTH_FAILED`)
      t.match(err?.message, pattern, `${label}: ${name}: says why`)
      t.equal(requests.length, 1, `${label}: ${name}: one request, no retry`)
    }
  }
  t.same([...cloud.assets.keys()], [], 'nothing was written')
})

t.test('an unknown cloud name: CONTAINER_NOT_FOUND on every call', async (t) => {
  const driver = open({ cloudName: 'no-such-cloud' })
  for (const [name, call] of everyCall(driver)) {
    const err = await failure(call())
    t.equal(err.code, 'CONTAINER_NOT_FOUND', `${name}: CONTAINER_NOT_FOUND`)
    t.match(err.message, /no-such-cloud/, `${name}: names the cloud`)
  }
})

t.test('unreachable: refused and silent endpoints', async (t) => {
  const closed = await freePort()
  let err = await failure(open({ apiUrl: `http://127.0.0.1:${closed}` }).test())
  t.equal(err.code, 'UNREACHABLE', 'API refused')
  t.equal(err.retryable, true)
  t.match(err.message, new RegExp(`127\\.0\\.0\\.1:${closed}`))

  const driver = open({}, undefined, { ...FAST, timeoutMs: 300, retry: { attempts: 2, baseDelayMs: 10, maxDelayMs: 10 } })
  cloud.server.fault = () => ({ hang: true })
  t.teardown(() => { cloud.server.fault = undefined })
  const started = performance.now()
  const requests = await requestsDuring(async () => { err = await failure(driver.stat('h.gz')) })
  const ms = performance.now() - started
  t.equal(err.code, 'UNREACHABLE', 'an API that never answers')
  t.equal(requests.length, 2, 'two attempts')
  t.ok(ms >= 600 && ms < 3000, `after the timeouts (${Math.round(ms)} ms)`)
})

t.test('transient errors are retried (bounded), client errors are not', async (t) => {
  const driver = open()
  t.teardown(() => { cloud.server.fault = undefined })
  for (const [label, status, attempts, retryable] of [
    ['500', 500, 3, true],
    ['420 rate limited', 420, 3, true],
    ['400', 400, 1, false],
  ] as Array<[string, number, number, boolean]>) {
    cloud.server.fault = (req) => req.url?.includes('/resources/') === true ? { status, body: { error: { message: `injected ${status}` } } } : undefined
    let err: CloudPilotError | undefined
    const requests = await requestsDuring(async () => { err = await failure(driver.list('')) })
    t.equal(err?.code, 'UPLOAD_FAILED', `${label}: UPLOAD_FAILED`)
    t.equal(err?.retryable, retryable, `${label}: retryable ${String(retryable)}`)
    t.equal(requests.length, attempts, `${label}: ${attempts} attempt(s)`)
  }
})

t.test('a chunk that fails once is sent again; one refused for good stops the put', async (t) => {
  const driver = open()
  let chunks = 0
  cloud.server.fault = (req) => req.url?.endsWith('/raw/upload') === true && ++chunks === 2 ? { status: 503, body: { error: { message: 'Service unavailable' } } } : undefined
  t.teardown(() => { cloud.server.fault = undefined })
  const src = byteSource(16 * MiB, { chunkSize: MiB })
  t.same(await driver.put('retry/chunk.gz', src.stream), { key: 'retry/chunk.gz', sizeBytes: 16 * MiB })
  t.equal(chunks, 5, 'four chunks, one of them twice')
  t.equal((await drain(await driver.get('retry/chunk.gz'))).sha256, src.sha256(), 'byte-exact')
  await driver.delete('retry/chunk.gz')

  chunks = 0
  cloud.server.fault = (req) => req.url?.endsWith('/raw/upload') === true && ++chunks === 2 ? { status: 400, body: { error: { message: 'Invalid request' } } } : undefined
  const big = byteSource(200 * MiB, { chunkSize: MiB })
  const err = await failure(driver.put('fail-fast/big.gz', big.stream))
  t.equal(err.code, 'UPLOAD_FAILED')
  t.equal(err.retryable, false)
  t.ok(big.emitted() < 30 * MiB, `the source was not read to the end (${Math.round(big.emitted() / MiB)} of 200 MiB)`)
  t.ok(big.stream.destroyed, 'the source was destroyed')
  t.equal(await driver.stat('fail-fast/big.gz'), null, 'nothing under the key')
})

t.test('a file over the plan\'s limit: UPLOAD_FAILED, not retryable, with the limit', async (t) => {
  cloud.maxFileSize = 10 * 1000 * 1000
  t.teardown(() => { cloud.maxFileSize = 100 * 1000 * 1000 })
  const err = await failure(open().put('big.gz', byteSource(12 * MiB).stream))
  t.equal(err.code, 'UPLOAD_FAILED')
  t.equal(err.retryable, false)
  t.match(err.message, /Maximum is 10000000/)
  t.match(err.hint, /plan/)
})

t.test('abort while the last chunk publishes the asset: it is destroyed again', async (t) => {
  const driver = open()
  const ac = new AbortController()
  cloud.server.fault = (req) => {
    if (req.url?.endsWith('/raw/upload') === true && /\/\d+$/.test(String(req.headers['content-range']))) { ac.abort(); return { delayMs: 200 } }
    return undefined
  }
  t.teardown(() => { cloud.server.fault = undefined })
  await t.rejects(driver.put('commit/race.gz', byteSource(7 * MiB).stream, { signal: ac.signal }), { name: 'AbortError' })
  t.equal(await driver.stat('commit/race.gz'), null, 'nothing under the key')
})

const cert = await selfSignedCert()
t.test('TLS: a self-signed certificate: TLS_ERROR', { skip: process.env.CI === 'true' ? false : (typeof cert === 'string' ? cert : false) }, async (t) => {
  if (typeof cert === 'string') { t.fail(cert); return }
  t.teardown(() => cert.remove())
  const secure = await startCloudinaryDouble({ tls: { key: cert.key, cert: cert.cert } })
  t.teardown(() => secure.close())
  const err = await failure(open({ apiUrl: secure.apiUrl }).test())
  t.equal(err.code, 'TLS_ERROR')
  t.match(err.message, /certificate/i)
})

t.test('SSRF guard on the endpoints', async (t) => {
  t.throws(() => open({ apiUrl: 'https://169.254.169.254' }), { code: 'ENDPOINT_NOT_ALLOWED' }, 'apiUrl on the metadata address')
  t.throws(() => open({ deliveryUrl: 'https://169.254.169.254' }), { code: 'ENDPOINT_NOT_ALLOWED' }, 'deliveryUrl too')
  t.throws(() => open({}, undefined, FAST, false), { code: 'VALIDATION_FAILED' }, 'plain http only together with private endpoints')
  const before = cloud.server.requests.length
  const err = await failure(open({ apiUrl: `https://localhost:${cloud.server.port}`, deliveryUrl: `https://localhost:${cloud.server.port}` }, undefined, FAST, false).test())
  t.equal(err.code, 'ENDPOINT_NOT_ALLOWED', 'a name that resolves to loopback is refused before connecting')
  t.equal(cloud.server.requests.length, before, 'no request reached the server')
})

t.test('configuration is checked when the driver is made', async (t) => {
  t.throws(() => open({ cloudName: 'my cloud' }), { code: 'VALIDATION_FAILED' }, 'cloud name')
  t.throws(() => open({}, { apiKey: '', apiSecret: 'x' }), { code: 'VALIDATION_FAILED' }, 'no key')
  await t.rejects(open().put('x'.repeat(300), Readable.from([Buffer.from('x')])), { code: 'VALIDATION_FAILED' }, 'a key too long for a public ID')
})

t.test('no error message ever contains the API secret', async (t) => {
  t.ok(seen.length >= 25, `${seen.length} errors collected`)
  const basic = Buffer.from(`${cloud.apiKey}:${cloud.apiSecret}`).toString('base64')
  for (const err of seen) {
    const e = err as CloudPilotError
    const texts = [e.message, e.hint, String(e), JSON.stringify(e.toData?.() ?? {}), e.stack ?? '']
    t.notOk(texts.some((text) => text.includes(cloud.apiSecret) || text.includes(WRONG_SECRET) || text.includes(basic)), `${e.code}: ${e.message.slice(0, 80)}`)
  }
})
