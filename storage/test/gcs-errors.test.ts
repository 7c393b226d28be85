/**
 * The gcs driver's failure codes against the GCS JSON API double (helpers/gcs-double.ts) with faults injected:
 * refused keys, denied permissions, a missing bucket, unreachable and hung endpoints, TLS, what is and is not
 * retried, token refresh, fail-fast and abort at the last chunk, SSRF, and no secret in any message.
 */
import t from 'tap'
import { generateKeyPairSync } from 'node:crypto'
import { Readable } from 'node:stream'
import { CloudPilotError } from '@cloudpilot/protocol'
import type { GcsConfig } from '@cloudpilot/protocol'
import { GcsDriver, type GcsTuning } from '../src/gcs.ts'
import { byteSource, drain, readAll } from './helpers/byte-source.ts'
import { startGcsDouble } from './helpers/gcs-double.ts'
import { freePort } from './helpers/sshd.ts'
import { selfSignedCert } from './helpers/tls-cert.ts'

const MiB = 1024 * 1024
const gcs = await startGcsDouble({ buckets: ['backups', 'locked'] })
t.teardown(() => gcs.close())
const account = gcs.oauth.serviceAccount('backup-writer', gcs.tokenUri)
const seen: unknown[] = []
const warnings: string[] = []
const FAST: Partial<GcsTuning> = { chunkSize: 4 * MiB, timeoutMs: 5000, maxRetryDelaySeconds: 1 }

async function readAllText (stream: Readable): Promise<string> {
  return (await readAll(stream)).toString()
}

function open (config: Partial<GcsConfig> = {}, json = account.json, tuning: Partial<GcsTuning> = FAST, allowPrivateEndpoints = true): GcsDriver {
  const driver = new GcsDriver({ bucket: 'backups', apiEndpoint: gcs.endpoint, ...config }, { serviceAccountJson: json }, { allowPrivateEndpoints, onWarning: (message) => { warnings.push(message) } }, tuning)
  t.teardown(() => driver.close())
  return driver
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

async function requestsDuring (fn: () => Promise<unknown>): Promise<typeof gcs.requests> {
  const before = gcs.requests.length
  await fn()
  return gcs.requests.slice(before)
}

const everyCall = (driver: GcsDriver): Array<[string, () => Promise<unknown>]> => [
  ['put (one chunk)', () => driver.put('x/small.gz', Readable.from([Buffer.from('x')]))],
  ['put (several chunks)', () => driver.put('x/large.gz', byteSource(10 * MiB).stream)],
  ['get', () => driver.get('x/small.gz')],
  ['stat', () => driver.stat('x/small.gz')],
  ['list', () => driver.list('x/')],
  ['delete', () => driver.delete('x/small.gz')],
  ['test()', () => driver.test()],
]

/** The key file with another private key: the token endpoint refuses its signature. */
const otherKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()
const forged = JSON.stringify({ ...JSON.parse(account.json) as Record<string, unknown>, private_key: otherKey })

t.test('a key the token endpoint refuses: AUTH_FAILED on every call, never retried', async (t) => {
  const driver = open({}, forged)
  for (const [name, call] of everyCall(driver)) {
    let err: CloudPilotError | undefined
    const requests = await requestsDuring(async () => { err = await failure(call()) })
    t.equal(err?.code, 'AUTH_FAILED', `${name}: AUTH_FAILED`)
    t.match(err?.message, /Invalid JWT Signature/, `${name}: with the token endpoint's reason`)
    t.same(requests.map((r) => r.url), ['/token'], `${name}: one token request, nothing else`)
  }
  t.equal(gcs.buckets.get('backups')?.size, 0, 'nothing was written')
})

t.test('a service account without permission on the bucket: AUTH_FAILED with the role to grant', async (t) => {
  gcs.denied.set('locked', new Set([account.clientEmail]))
  const driver = open({ bucket: 'locked' })
  for (const [name, call] of everyCall(driver)) {
    let err: CloudPilotError | undefined
    const requests = await requestsDuring(async () => { err = await failure(call()) })
    t.equal(err?.code, 'AUTH_FAILED', `${name}: AUTH_FAILED`)
    t.match(err?.hint, /roles\/storage\.objectAdmin/, `${name}: the hint names the role`)
    t.ok(requests.filter((r) => r.status === 403).length === 1, `${name}: the 403 is not retried`)
  }
})

t.test('missing bucket: CONTAINER_NOT_FOUND on every call', async (t) => {
  const driver = open({ bucket: 'no-such-bucket' })
  for (const [name, call] of everyCall(driver)) {
    const err = await failure(call())
    t.equal(err.code, 'CONTAINER_NOT_FOUND', `${name}: CONTAINER_NOT_FOUND`)
    t.match(err.message, /no-such-bucket/, `${name}: names the bucket`)
  }
})

t.test('unreachable: API endpoint refused or silent, token endpoint refused', async (t) => {
  const closed = await freePort()
  let err = await failure(open({ apiEndpoint: `http://127.0.0.1:${closed}` }).test())
  t.equal(err.code, 'UNREACHABLE', 'API endpoint refused: UNREACHABLE')
  t.equal(err.retryable, true)

  const unreachableToken = JSON.stringify({ ...JSON.parse(account.json) as Record<string, unknown>, token_uri: `http://127.0.0.1:${closed}/token` })
  const started = performance.now()
  err = await failure(open({}, unreachableToken).stat('x'))
  t.equal(err.code, 'UNREACHABLE', 'token endpoint refused: UNREACHABLE')
  t.match(err.message, new RegExp(`127\\.0\\.0\\.1:${closed}`), 'names the token endpoint')
  t.ok(performance.now() - started < 5000, 'within seconds, after bounded retries')

  t.teardown(() => { gcs.fault = undefined })
  const driver = open({}, account.json, { ...FAST, timeoutMs: 300, maxRetries: 1 })
  await driver.stat('warm-up') // the token is fetched before the API goes silent
  gcs.fault = (req) => req.url?.startsWith('/storage/') === true ? { hang: true } : undefined
  const hangStart = performance.now()
  const requests = await requestsDuring(async () => { err = await failure(driver.stat('h.gz')) })
  const ms = performance.now() - hangStart
  t.equal(err.code, 'UNREACHABLE', 'an API that never answers: UNREACHABLE')
  t.ok(ms >= 300 && ms < 5000, `after the request timeout (${Math.round(ms)} ms, ${requests.length} requests)`)
})

t.test('transient errors are retried (bounded), client errors are not', async (t) => {
  t.teardown(() => { gcs.fault = undefined })
  const driver = open({}, account.json, { ...FAST, maxRetries: 2 })
  await driver.stat('warm-up')
  gcs.fault = (req) => req.url?.startsWith('/storage/') === true ? { status: 503, reason: 'backendError', message: 'Backend Error' } : undefined
  let err: CloudPilotError | undefined
  let requests = await requestsDuring(async () => { err = await failure(driver.list('')) })
  t.equal(err?.code, 'UPLOAD_FAILED', '503: UPLOAD_FAILED after the attempts')
  t.equal(err?.retryable, true, 'retryable')
  t.equal(requests.length, 3, '3 attempts')

  gcs.fault = (req) => req.url?.startsWith('/storage/') === true ? { status: 400, reason: 'invalid', message: 'Invalid argument.' } : undefined
  requests = await requestsDuring(async () => { err = await failure(driver.stat('x')) })
  t.equal(err?.code, 'UPLOAD_FAILED', '400: UPLOAD_FAILED')
  t.equal(err?.retryable, false, 'not retryable')
  t.equal(requests.length, 1, 'not retried')
})

t.test('a chunk that fails once is retried and the object is intact', async (t) => {
  const driver = open()
  let chunks = 0
  gcs.fault = (req) => req.method === 'PUT' && /upload_id=/.test(req.url ?? '') && /^bytes \d/.test(String(req.headers['content-range'])) && ++chunks === 2 ? { status: 503, reason: 'backendError' } : undefined
  t.teardown(() => { gcs.fault = undefined })
  const src = byteSource(18 * MiB, { chunkSize: MiB })
  t.same(await driver.put('retry/chunk.gz', src.stream), { key: 'retry/chunk.gz', sizeBytes: 18 * MiB })
  t.ok(chunks >= 6, `the failed chunk was sent again (${chunks} chunk requests for 5 chunks)`)
  t.equal((await drain(await driver.get('retry/chunk.gz'))).sha256, src.sha256(), 'byte-exact after the retry')
  await driver.delete('retry/chunk.gz')
})

t.test('a chunk refused for good stops the put at once and cancels the session', async (t) => {
  const driver = open()
  let chunks = 0
  gcs.fault = (req) => req.method === 'PUT' && /upload_id=/.test(req.url ?? '') && /^bytes \d/.test(String(req.headers['content-range'])) && ++chunks === 2 ? { status: 403, reason: 'forbidden', message: 'Access denied.' } : undefined
  t.teardown(() => { gcs.fault = undefined })
  const src = byteSource(200 * MiB, { chunkSize: MiB })
  const cancelledBefore = gcs.cancelled.size
  const err = await failure(driver.put('fail-fast/big.gz', src.stream))
  t.equal(err.code, 'AUTH_FAILED', 'the chunk\'s own error')
  t.ok(src.emitted() < 40 * MiB, `the source was not read to the end (${Math.round(src.emitted() / MiB)} of 200 MiB)`)
  t.ok(src.stream.destroyed, 'the source was destroyed')
  t.equal(gcs.cancelled.size, cancelledBefore + 1, 'the upload session was cancelled')
  t.same(gcs.openSessions(), [], 'no session left open')
  t.equal(await driver.stat('fail-fast/big.gz'), null, 'nothing under the key')
})

t.test('abort while the last chunk is being stored: the object is taken back', async (t) => {
  const driver = open()
  const ac = new AbortController()
  gcs.fault = (req) => {
    if (req.method === 'PUT' && /\/\d+$/.test(String(req.headers['content-range'])) && /^bytes \d/.test(String(req.headers['content-range']))) { ac.abort(); return { delayMs: 200 } }
    return undefined
  }
  t.teardown(() => { gcs.fault = undefined })
  await t.rejects(driver.put('commit/race.gz', byteSource(6 * MiB).stream, { signal: ac.signal }), { name: 'AbortError' }, 'put rejects with an AbortError')
  await new Promise((resolve) => setTimeout(resolve, 300))
  t.equal(await driver.stat('commit/race.gz'), null, 'nothing under the key')
  t.same(gcs.openSessions(), [], 'no session left open')
})

t.test('an access token that expires is replaced; one the API refuses is replaced at once', async (t) => {
  gcs.oauth.tokenLifetimeSeconds = 61 // cached until a minute before expiry: renewed after ~1 s
  t.teardown(() => { gcs.oauth.tokenLifetimeSeconds = 3600 })
  const driver = open()
  await driver.put('refresh/a.gz', Readable.from([Buffer.from('a')]))
  const issued = gcs.oauth.issued()
  await new Promise((resolve) => setTimeout(resolve, 1200))
  t.equal((await driver.stat('refresh/a.gz'))?.sizeBytes, 1, 'works after the token\'s end')
  t.ok(gcs.oauth.issued() > issued, 'with a new token')

  gcs.oauth.tokenLifetimeSeconds = 3600
  await driver.stat('refresh/a.gz')
  gcs.oauth.revokeAccessTokens()
  const before = gcs.oauth.issued()
  const requests = await requestsDuring(async () => { t.equal((await driver.stat('refresh/a.gz'))?.sizeBytes, 1, 'a token the API refuses (401) is replaced and the call succeeds') })
  t.equal(gcs.oauth.issued(), before + 1, 'with one new token')
  t.equal(requests.filter((r) => r.status === 401).length, 1, 'after one refused request')
  gcs.oauth.revokeAccessTokens()
  t.ok((await readAllText(await driver.get('refresh/a.gz'))) === 'a', 'the same for a download')
  await driver.delete('refresh/a.gz')
})

const cert = await selfSignedCert()
t.test('TLS: a self-signed certificate on the API or the token endpoint: TLS_ERROR', { skip: process.env.CI === 'true' ? false : (typeof cert === 'string' ? cert : false) }, async (t) => {
  if (typeof cert === 'string') { t.fail(cert); return }
  t.teardown(() => cert.remove())
  const secure = await startGcsDouble({ tls: { key: cert.key, cert: cert.cert } })
  t.teardown(() => secure.close())
  let err = await failure(open({ apiEndpoint: secure.endpoint }).test())
  t.equal(err.code, 'TLS_ERROR', 'API endpoint with a self-signed certificate')
  const tlsToken = JSON.stringify({ ...JSON.parse(account.json) as Record<string, unknown>, token_uri: secure.tokenUri })
  err = await failure(open({}, tlsToken).test())
  t.equal(err.code, 'TLS_ERROR', 'token endpoint with a self-signed certificate')
  t.match(err.message, /certificate/i)
})

t.test('SSRF guard on the endpoints', async (t) => {
  t.throws(() => open({ apiEndpoint: 'https://169.254.169.254' }), { code: 'ENDPOINT_NOT_ALLOWED' }, 'metadata address refused even when private endpoints are allowed')
  t.throws(() => open({}, JSON.stringify({ ...JSON.parse(account.json) as Record<string, unknown>, token_uri: 'http://169.254.169.254/token' })), { code: 'ENDPOINT_NOT_ALLOWED' }, 'a token_uri on the metadata address too')
  t.throws(() => open({ apiEndpoint: gcs.endpoint }, account.json, FAST, false), { code: 'VALIDATION_FAILED' }, 'plain http only together with private endpoints')
  const port = new URL(gcs.endpoint).port
  const before = gcs.requests.length
  const err = await failure(open({ apiEndpoint: `https://localhost:${port}` }, JSON.stringify({ ...JSON.parse(account.json) as Record<string, unknown>, token_uri: `https://localhost:${port}/token` }), FAST, false).stat('x'))
  t.equal(err.code, 'ENDPOINT_NOT_ALLOWED', 'a name that resolves to loopback is refused before connecting')
  t.equal(gcs.requests.length, before, 'no request reached the server')
})

t.test('configuration is checked when the driver is made', async (t) => {
  t.throws(() => open({ bucket: 'Bad Bucket' }), { code: 'VALIDATION_FAILED' }, 'bucket naming rules')
  t.throws(() => open({}, 'not json'), { code: 'VALIDATION_FAILED', message: /not valid JSON/ }, 'not JSON')
  t.throws(() => open({}, JSON.stringify({ type: 'authorized_user', client_id: 'x' })), { code: 'VALIDATION_FAILED', message: /not a service account/ }, 'another kind of credential')
  t.throws(() => open({}, JSON.stringify({ ...JSON.parse(account.json) as Record<string, unknown>, private_key: '-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n' })), { code: 'VALIDATION_FAILED', message: /private_key cannot be read/ }, 'a broken private key')
})

t.test('no error message or warning ever contains the private key or an access token', async (t) => {
  t.ok(seen.length >= 25, `${seen.length} errors collected`)
  const keyBody = (JSON.parse(account.json) as { private_key: string }).private_key.split('\n')[3] ?? 'none'
  const forgedBody = otherKey.split('\n')[3] ?? 'none'
  for (const err of seen) {
    const e = err as CloudPilotError
    const texts = [e.message, e.hint, String(e), JSON.stringify(e.toData?.() ?? {}), e.stack ?? '']
    t.notOk(texts.some((text) => text.includes(keyBody) || text.includes(forgedBody) || /ya29\.double-/.test(text)), `${e.code}: ${e.message.slice(0, 80)}`)
  }
  t.notOk(warnings.some((w) => /ya29\./.test(w)), 'warnings neither')
})
