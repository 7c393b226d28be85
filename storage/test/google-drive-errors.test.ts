/**
 * The google_drive driver's failure codes against the Drive v3 double (helpers/drive-double.ts) with faults
 * injected: refused keys and refresh tokens, folders that are missing, not shared, read-only or outside a shared
 * drive, unreachable and hung endpoints, TLS, retries and resumption, token renewal, abort at the last chunk, SSRF,
 * and no secret in any message.
 */
import t from 'tap'
import { generateKeyPairSync } from 'node:crypto'
import { Readable } from 'node:stream'
import { CloudPilotError } from '@cloudpilot/protocol'
import type { GoogleDriveConfig, GoogleDriveCredentials } from '@cloudpilot/protocol'
import { GoogleDriveDriver, type DriveTuning } from '../src/google-drive.ts'
import { byteSource, drain, readAll } from './helpers/byte-source.ts'
import { startDriveDouble } from './helpers/drive-double.ts'
import { freePort } from './helpers/sshd.ts'
import { selfSignedCert } from './helpers/tls-cert.ts'

const MiB = 1024 * 1024
const drive = await startDriveDouble()
t.teardown(() => drive.close())
const account = drive.oauth.serviceAccount('backup-writer', drive.tokenUri)
const user = drive.oauth.oauthClient()
const folderId = drive.folder('backups', { writers: [account.clientEmail, user.clientId], inSharedDrive: true })
const readOnly = drive.folder('read-only', { readers: [account.clientEmail], inSharedDrive: true })
const notShared = drive.folder('someone else\'s', { writers: ['someone@example.com'] })
const myDrive = drive.folder('in my drive', { writers: [account.clientEmail], inSharedDrive: false })
const FAST: Partial<DriveTuning> = { chunkSize: 4 * MiB, timeoutMs: 5000, retry: { attempts: 3, baseDelayMs: 20, maxDelayMs: 100 } }
const seen: unknown[] = []

function open (config: Partial<GoogleDriveConfig> = {}, credentials: GoogleDriveCredentials = { serviceAccountJson: account.json }, tuning: Partial<DriveTuning> = FAST, allowPrivateEndpoints = true): GoogleDriveDriver {
  return new GoogleDriveDriver({ folderId, rootUrl: drive.rootUrl, tokenUrl: drive.tokenUri, ...config }, credentials, { allowPrivateEndpoints }, tuning)
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

async function requestsDuring (fn: () => Promise<unknown>): Promise<typeof drive.server.requests> {
  const before = drive.server.requests.length
  await fn()
  return drive.server.requests.slice(before)
}

const everyCall = (driver: GoogleDriveDriver): Array<[string, () => Promise<unknown>]> => [
  ['put (one chunk)', () => driver.put('x/small.gz', Readable.from([Buffer.from('x')]))],
  ['put (several chunks)', () => driver.put('x/large.gz', byteSource(10 * MiB).stream)],
  ['get', () => driver.get('x/small.gz')],
  ['stat', () => driver.stat('x/small.gz')],
  ['list', () => driver.list('x/')],
  ['delete', () => driver.delete('x/small.gz')],
  ['test()', () => driver.test()],
]

const otherKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()
const forged = JSON.stringify({ ...JSON.parse(account.json) as Record<string, unknown>, private_key: otherKey })

t.test('refused credentials: AUTH_FAILED on every call, never retried', async (t) => {
  for (const [label, credentials, pattern] of [
    ['a service account key the token endpoint refuses', { serviceAccountJson: forged }, /Invalid JWT Signature/],
    ['a wrong client secret', { clientId: user.clientId, clientSecret: 'GOCSPX-wrong-secret-0123456789', refreshToken: user.refreshToken }, /invalid_client/],
  ] as Array<[string, GoogleDriveCredentials, RegExp]>) {
    const driver = open({}, credentials)
    for (const [name, call] of everyCall(driver)) {
      let err: CloudPilotError | undefined
      const requests = await requestsDuring(async () => { err = await failure(call()) })
      t.equal(err?.code, 'AUTH_FAILED', `${label}: ${name}: AUTH_FAILED`)
      t.match(err?.message, pattern, `${label}: ${name}: with the token endpoint's reason`)
      t.same(requests.map((r) => r.url), ['/token'], `${label}: ${name}: one token request, nothing else`)
    }
  }
  const revoked = drive.oauth.oauthClient()
  drive.oauth.revokeRefreshToken(revoked.refreshToken)
  const err = await failure(open({}, revoked).test())
  t.equal(err.code, 'AUTH_FAILED', 'a revoked refresh token')
  t.match(err.message, /expired or revoked/)
  t.match(err.hint, /authorize again/, 'the hint says to authorize again')
  t.same(drive.filesIn(folderId), [], 'nothing was written')
})

t.test('the folder is missing or not shared: CONTAINER_NOT_FOUND on every call', async (t) => {
  for (const [label, id] of [['a folder id that does not exist', 'NoSuchFolder1234567890abcdef'], ['a folder not shared with the account', notShared]] as Array<[string, string]>) {
    const driver = open({ folderId: id })
    for (const [name, call] of everyCall(driver)) {
      const err = await failure(call())
      t.equal(err.code, 'CONTAINER_NOT_FOUND', `${label}: ${name}: CONTAINER_NOT_FOUND`)
      t.match(err.hint, /shared with this account/, `${label}: ${name}: the hint says to share it`)
    }
  }
  const fileAsFolder = drive.filesIn(folderId)[0]?.id
  t.equal(fileAsFolder, undefined, 'precondition: the folder is empty')
  const driver = open()
  await driver.put('a-file.txt', Readable.from([Buffer.from('x')]))
  const fileId = drive.filesIn(folderId)[0]?.id ?? ''
  const err = await failure(open({ folderId: fileId }).test())
  t.equal(err.code, 'CONTAINER_NOT_FOUND', 'a file id as folderId')
  t.match(err.message, /not a folder/)
  await driver.delete('a-file.txt')
})

t.test('a folder shared read-only: AUTH_FAILED with how to share it', async (t) => {
  const driver = open({ folderId: readOnly })
  const err = await failure(driver.put('x.gz', Readable.from([Buffer.from('x')])))
  t.equal(err.code, 'AUTH_FAILED')
  t.match(err.hint, /share the folder with the service account/)
  t.same(await driver.list(''), { items: [], nextCursor: null }, 'while listing works')
})

t.test('a service account writing outside a shared drive: NO_SPACE with what to do', async (t) => {
  drive.serviceAccountsHaveNoQuota = true
  t.teardown(() => { drive.serviceAccountsHaveNoQuota = false })
  const err = await failure(open({ folderId: myDrive }).test())
  t.equal(err.code, 'NO_SPACE')
  t.match(err.message, /storageQuotaExceeded/)
  t.match(err.hint, /shared drive/)
})

t.test('unreachable: API or token endpoint refused, API silent', async (t) => {
  const closed = await freePort()
  let err = await failure(open({ rootUrl: `http://127.0.0.1:${closed}/` }).test())
  t.equal(err.code, 'UNREACHABLE', 'API refused')
  t.equal(err.retryable, true)
  err = await failure(open({}, { clientId: user.clientId, clientSecret: user.clientSecret, refreshToken: user.refreshToken }).test().then(async () => await open({ tokenUrl: `http://127.0.0.1:${closed}/token` }, { clientId: user.clientId, clientSecret: user.clientSecret, refreshToken: user.refreshToken }).test()))
  t.equal(err.code, 'UNREACHABLE', 'token endpoint refused')
  t.match(err.message, new RegExp(`127\\.0\\.0\\.1:${closed}`), 'names it')

  const driver = open({}, undefined, { ...FAST, timeoutMs: 300, retry: { attempts: 2, baseDelayMs: 10, maxDelayMs: 10 } })
  await driver.stat('warm-up')
  drive.server.fault = (req) => req.url?.startsWith('/drive/') === true ? { hang: true } : undefined
  t.teardown(() => { drive.server.fault = undefined })
  const started = performance.now()
  const requests = await requestsDuring(async () => { err = await failure(driver.stat('h.gz')) })
  const ms = performance.now() - started
  t.equal(err.code, 'UNREACHABLE', 'an API that never answers: UNREACHABLE')
  t.equal(requests.length, 2, 'two attempts')
  t.ok(ms >= 600 && ms < 3000, `after the timeouts (${Math.round(ms)} ms)`)
})

t.test('transient errors are retried (bounded), client errors are not', async (t) => {
  const driver = open()
  await driver.stat('warm-up')
  t.teardown(() => { drive.server.fault = undefined })
  const answer = (status: number, reason: string): { status: number, body: unknown } => ({ status, body: { error: { code: status, message: reason, errors: [{ reason, message: reason, domain: 'usageLimits' }] } } })
  for (const [label, status, reason, attempts, code, retryable] of [
    ['503 backendError', 503, 'backendError', 3, 'UPLOAD_FAILED', true],
    ['403 userRateLimitExceeded', 403, 'userRateLimitExceeded', 3, 'UPLOAD_FAILED', true],
    ['429 rateLimitExceeded', 429, 'rateLimitExceeded', 3, 'UPLOAD_FAILED', true],
    ['400 invalid', 400, 'invalid', 1, 'UPLOAD_FAILED', false],
  ] as Array<[string, number, string, number, string, boolean]>) {
    drive.server.fault = (req) => req.url?.startsWith('/drive/') === true ? answer(status, reason) : undefined
    let err: CloudPilotError | undefined
    const requests = await requestsDuring(async () => { err = await failure(driver.list('')) })
    t.equal(err?.code, code, `${label}: ${code}`)
    t.equal(err?.retryable, retryable, `${label}: retryable ${String(retryable)}`)
    t.equal(requests.length, attempts, `${label}: ${attempts} attempt(s)`)
  }
})

t.test('a chunk that fails is resumed from the session\'s offset; one refused for good stops the put', async (t) => {
  const driver = open()
  let chunks = 0
  drive.server.fault = (req) => req.method === 'PUT' && /upload_id=/.test(req.url ?? '') && /^bytes \d/.test(String(req.headers['content-range'])) && ++chunks === 2 ? { status: 503, body: { error: { code: 503, message: 'Backend Error' } } } : undefined
  t.teardown(() => { drive.server.fault = undefined })
  const src = byteSource(18 * MiB, { chunkSize: MiB })
  let requests = await requestsDuring(async () => { t.same(await driver.put('retry/chunk.gz', src.stream), { key: 'retry/chunk.gz', sizeBytes: 18 * MiB }) })
  t.ok(requests.some((r) => r.method === 'PUT' && r.status === 308 && /upload_id=/.test(r.url)), 'resumed')
  t.equal((await drain(await driver.get('retry/chunk.gz'))).sha256, src.sha256(), 'byte-exact after the resumption')
  await driver.delete('retry/chunk.gz')

  chunks = 0
  drive.server.fault = (req) => req.method === 'PUT' && /upload_id=/.test(req.url ?? '') && ++chunks === 2 ? { status: 403, body: { error: { code: 403, message: 'The user does not have sufficient permissions for this file.', errors: [{ reason: 'insufficientFilePermissions' }] } } } : undefined
  const big = byteSource(200 * MiB, { chunkSize: MiB })
  let err: CloudPilotError | undefined
  requests = await requestsDuring(async () => { err = await failure(driver.put('fail-fast/big.gz', big.stream)) })
  t.equal(err?.code, 'AUTH_FAILED', 'the chunk\'s own error')
  t.ok(big.emitted() < 40 * MiB, `the source was not read to the end (${Math.round(big.emitted() / MiB)} of 200 MiB)`)
  t.ok(big.stream.destroyed, 'the source was destroyed')
  t.equal(await driver.stat('fail-fast/big.gz'), null, 'nothing under the key')
})

t.test('abort while the last chunk completes the file: the file is deleted again', async (t) => {
  const driver = open()
  const ac = new AbortController()
  drive.server.fault = (req) => {
    if (req.method === 'PUT' && /\/\d+$/.test(String(req.headers['content-range'])) && /^bytes \d/.test(String(req.headers['content-range']))) { ac.abort(); return { delayMs: 200 } }
    return undefined
  }
  t.teardown(() => { drive.server.fault = undefined })
  await t.rejects(driver.put('commit/race.gz', byteSource(6 * MiB).stream, { signal: ac.signal }), { name: 'AbortError' })
  await new Promise((resolve) => setTimeout(resolve, 300))
  t.equal(await driver.stat('commit/race.gz'), null, 'nothing under the key')
})

t.test('an access token the API refuses is renewed once', async (t) => {
  const driver = open()
  await driver.put('renew/a.gz', Readable.from([Buffer.from('a')]))
  drive.oauth.revokeAccessTokens()
  const before = drive.oauth.issued()
  t.equal((await readAll(await driver.get('renew/a.gz'))).toString(), 'a', 'the call succeeds')
  t.equal(drive.oauth.issued(), before + 1, 'with one new token')
  await driver.delete('renew/a.gz')
})

const cert = await selfSignedCert()
t.test('TLS: a self-signed certificate on the API: TLS_ERROR', { skip: process.env.CI === 'true' ? false : (typeof cert === 'string' ? cert : false) }, async (t) => {
  if (typeof cert === 'string') { t.fail(cert); return }
  t.teardown(() => cert.remove())
  const secure = await startDriveDouble({ tls: { key: cert.key, cert: cert.cert } })
  t.teardown(() => secure.close())
  const err = await failure(open({ rootUrl: secure.rootUrl }).test())
  t.equal(err.code, 'TLS_ERROR')
  t.match(err.message, /certificate/i)
})

t.test('SSRF guard on the endpoints', async (t) => {
  t.throws(() => open({ rootUrl: 'https://169.254.169.254/' }), { code: 'ENDPOINT_NOT_ALLOWED' }, 'rootUrl on the metadata address')
  t.throws(() => open({ tokenUrl: 'https://[fd00:ec2::254]/token' }, { clientId: 'a', clientSecret: 'b', refreshToken: 'c' }), { code: 'ENDPOINT_NOT_ALLOWED' }, 'tokenUrl on the AWS IPv6 metadata address')
  t.throws(() => open({}, undefined, FAST, false), { code: 'VALIDATION_FAILED' }, 'plain http only together with private endpoints')
  const before = drive.server.requests.length
  const err = await failure(open({ rootUrl: `https://localhost:${drive.server.port}/` }, { serviceAccountJson: JSON.stringify({ ...JSON.parse(account.json) as Record<string, unknown>, token_uri: `https://localhost:${drive.server.port}/token` }) }, FAST, false).test())
  t.equal(err.code, 'ENDPOINT_NOT_ALLOWED', 'a name that resolves to loopback is refused before connecting')
  t.equal(drive.server.requests.length, before, 'no request reached the server')
})

t.test('configuration is checked when the driver is made', async (t) => {
  t.throws(() => open({ folderId: 'https://drive.google.com/drive/folders/abc' }), { code: 'VALIDATION_FAILED' }, 'a URL instead of the folder id')
  t.throws(() => open({}, {}), { code: 'VALIDATION_FAILED' }, 'no credentials')
  t.throws(() => open({}, { clientId: 'x', clientSecret: 'y' }), { code: 'VALIDATION_FAILED' }, 'OAuth credentials without a refresh token')
})

t.test('no error message ever contains a secret', async (t) => {
  t.ok(seen.length >= 30, `${seen.length} errors collected`)
  const keyBody = (JSON.parse(account.json) as { private_key: string }).private_key.split('\n')[3] ?? 'none'
  for (const err of seen) {
    const e = err as CloudPilotError
    const texts = [e.message, e.hint, String(e), JSON.stringify(e.toData?.() ?? {}), e.stack ?? '']
    t.notOk(texts.some((text) => text.includes(keyBody) || text.includes(user.clientSecret) || text.includes(user.refreshToken) || text.includes('GOCSPX-wrong-secret') || /ya29\.double-/.test(text)), `${e.code}: ${e.message.slice(0, 80)}`)
  }
})
