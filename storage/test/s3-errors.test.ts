/**
 * The S3 driver's failure behaviour against s3rver behind a SigV4-verifying front (see helpers/s3rver.ts), with
 * faults injected at that front: error codes of the troubleshooting table, what is and is not retried, timeouts,
 * TLS, SSRF refusals, and that no message ever carries the secret key.
 */
import t from 'tap'
import { execFile } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import net, { type AddressInfo } from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { Readable } from 'node:stream'
import { promisify } from 'node:util'
import { CloudPilotError, ERRORS } from '@cloudpilot/protocol'
import type { S3Config, S3Credentials } from '@cloudpilot/protocol'
import { S3Driver, type S3Tuning } from '../src/s3.ts'
import type { StorageDriver } from '../src/driver.ts'
import { byteSource, drain, readAll } from './helpers/byte-source.ts'
import { startS3rver } from './helpers/s3rver.ts'

const MiB = 1024 * 1024
const s3 = await startS3rver()
t.teardown(() => s3.close())

const SECRET = 'wR0ng/Secret+Key=NeverShow1234567890abcd'
/** Every error any test here saw: checked at the end for the secret. */
const seen: unknown[] = []

function open (config: Partial<S3Config> = {}, credentials: Partial<S3Credentials> = {}, tuning: Partial<S3Tuning> = {}, allowPrivateEndpoints = true): S3Driver {
  const driver = new S3Driver(
    { bucket: s3.bucket, region: s3.region, endpoint: s3.endpoint, forcePathStyle: true, ...config },
    { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey, ...credentials },
    { allowPrivateEndpoints },
    tuning,
  )
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

/** The requests the front saw while `fn` ran. */
async function requestsDuring (fn: () => Promise<unknown>): Promise<typeof s3.requests> {
  const before = s3.requests.length
  await fn()
  return s3.requests.slice(before)
}

function closedPort (): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo
      server.close(() => resolve(port))
    })
  })
}

t.test('wrong secret key: AUTH_FAILED on every call, never retried', async (t) => {
  const driver = open({}, { secretAccessKey: SECRET })
  const calls: Array<[string, () => Promise<unknown>]> = [
    ['put (one part)', () => driver.put('x/small.gz', Readable.from([Buffer.from('x')]))],
    ['put (multipart)', () => driver.put('x/large.gz', byteSource(20 * MiB).stream)],
    ['get', () => driver.get('x/small.gz')],
    ['stat', () => driver.stat('x/small.gz')],
    ['list', () => driver.list('x/')],
    ['delete', () => driver.delete('x/small.gz')],
    ['test()', () => driver.test()],
  ]
  for (const [name, call] of calls) {
    let err: CloudPilotError | undefined
    const requests = await requestsDuring(async () => { err = await failure(call()) })
    t.equal(err?.code, 'AUTH_FAILED', `${name}: AUTH_FAILED`)
    t.equal(requests.length, 1, `${name}: one request, no retry of a 403`)
    t.ok((err?.hint.length ?? 0) > 10, `${name}: with a hint`)
  }
  const put = await failure(driver.put('x/again.gz', Readable.from([Buffer.from('x')])))
  t.match(put.message, /SignatureDoesNotMatch/, 'the S3 error code is named')
  t.equal(put.hint, ERRORS.AUTH_FAILED.hint, 'hint: re-enter the credentials, check for trailing spaces')
  t.equal((await open().stat('x/small.gz')), null, 'nothing was written with the wrong key')
})

t.test('unknown access key id: AUTH_FAILED', async (t) => {
  const err = await failure(open({}, { accessKeyId: 'AKIANOTKNOWN' }).put('x/y.gz', Readable.from([Buffer.from('x')])))
  t.equal(err.code, 'AUTH_FAILED')
  t.match(err.message, /InvalidAccessKeyId/)
})

t.test('credentials pasted with surrounding whitespace still work', async (t) => {
  const driver = open({}, { accessKeyId: ` ${s3.accessKeyId}\t`, secretAccessKey: `${s3.secretAccessKey} \n` })
  t.same(await driver.put('ws/ok.gz', Readable.from([Buffer.from('ok')])), { key: 'ws/ok.gz', sizeBytes: 2 })
  await driver.delete('ws/ok.gz')
})

t.test('missing bucket: CONTAINER_NOT_FOUND on every call', async (t) => {
  const driver = open({ bucket: 'no-such-bucket' })
  const calls: Array<[string, () => Promise<unknown>]> = [
    ['put (one part)', () => driver.put('a.gz', Readable.from([Buffer.from('x')]))],
    ['put (multipart)', () => driver.put('b.gz', byteSource(20 * MiB).stream)],
    ['get', () => driver.get('a.gz')],
    ['stat', () => driver.stat('a.gz')],
    ['list', () => driver.list('')],
    ['delete', () => driver.delete('a.gz')],
    ['test()', () => driver.test()],
  ]
  for (const [name, call] of calls) {
    const err = await failure(call())
    t.equal(err.code, 'CONTAINER_NOT_FOUND', `${name}: CONTAINER_NOT_FOUND`)
    t.match(err.message, /no-such-bucket/, `${name}: names the bucket`)
  }
})

t.test('endpoint on a closed loopback port: UNREACHABLE within seconds', async (t) => {
  const port = await closedPort()
  const driver = open({ endpoint: `http://127.0.0.1:${port}` })
  for (const [name, call] of [
    ['put', () => driver.put('a.gz', byteSource(1 * MiB).stream)],
    ['test()', () => driver.test()],
    ['stat', () => driver.stat('a.gz')],
  ] as Array<[string, () => Promise<unknown>]>) {
    const started = performance.now()
    const err = await failure(call())
    const ms = performance.now() - started
    t.equal(err.code, 'UNREACHABLE', `${name}: UNREACHABLE`)
    t.ok(ms < 5000, `${name}: failed after ${Math.round(ms)} ms`)
    t.match(err.message, new RegExp(`127\\.0\\.0\\.1:${port}`), `${name}: names the endpoint`)
    t.equal(err.retryable, true, `${name}: retryable`)
  }
})

t.test('a server that accepts but never answers: UNREACHABLE after the socket timeout', async (t) => {
  const driver = open({}, {}, { socketTimeoutMs: 300, maxAttempts: 2 })
  s3.fault = () => ({ hang: true })
  t.teardown(() => { s3.fault = undefined })
  const started = performance.now()
  const err = await failure(driver.stat('hang.gz'))
  const ms = performance.now() - started
  t.equal(err.code, 'UNREACHABLE')
  t.ok(ms >= 300 && ms < 5000, `failed after ${Math.round(ms)} ms (2 attempts x 300 ms idle)`)
})

t.test('transient errors are retried (bounded), client errors are not', async (t) => {
  const driver = open()
  t.teardown(() => { s3.fault = undefined })

  s3.fault = () => ({ status: 500, code: 'InternalError', message: 'We encountered an internal error.' })
  let err: CloudPilotError | undefined
  let requests = await requestsDuring(async () => { err = await failure(driver.stat('r.gz')) })
  t.equal(err?.code, 'UPLOAD_FAILED', '500: UPLOAD_FAILED after the attempts')
  t.equal(requests.length, 3, '500: 3 attempts')
  t.equal(err?.retryable, true, '500: retryable')

  s3.fault = () => ({ reset: true })
  requests = await requestsDuring(async () => { err = await failure(driver.list('')) })
  t.equal(err?.code, 'UNREACHABLE', 'connection reset: UNREACHABLE')
  t.equal(requests.length, 3, 'connection reset: 3 attempts')

  s3.fault = () => ({ status: 503, code: 'SlowDown', message: 'Please reduce your request rate.' })
  requests = await requestsDuring(async () => { err = await failure(driver.delete('r.gz')) })
  t.equal(err?.code, 'UPLOAD_FAILED', 'throttling: UPLOAD_FAILED after the attempts')
  t.equal(requests.length, 3, 'throttling: 3 attempts')

  s3.fault = () => ({ status: 403, code: 'AccessDenied', message: 'Access Denied' })
  requests = await requestsDuring(async () => { err = await failure(driver.put('r.gz', Readable.from([Buffer.from('x')]))) })
  t.equal(err?.code, 'AUTH_FAILED', 'AccessDenied: AUTH_FAILED')
  t.match(err?.hint, /s3:PutObject/, 'AccessDenied: the hint names the permissions')
  t.equal(requests.length, 1, 'AccessDenied: not retried')

  s3.fault = () => ({ status: 400, code: 'InvalidArgument', message: 'Bad argument' })
  requests = await requestsDuring(async () => { err = await failure(driver.put('r.gz', Readable.from([Buffer.from('x')]))) })
  t.equal(err?.code, 'UPLOAD_FAILED', '400: UPLOAD_FAILED')
  t.equal(requests.length, 1, '400: not retried')
})

t.test('a part that fails once is retried and the object is intact', async (t) => {
  const driver = open()
  let failed = 0
  s3.fault = (req) => {
    if (req.method === 'PUT' && /partNumber=2(&|$)/.test(req.url ?? '') && failed === 0) { failed++; return { status: 500, code: 'InternalError' } }
    return undefined
  }
  t.teardown(() => { s3.fault = undefined })
  const src = byteSource(30 * MiB, { chunkSize: 1 * MiB })
  t.same(await driver.put('retry/part.gz', src.stream), { key: 'retry/part.gz', sizeBytes: 30 * MiB })
  t.equal(failed, 1, 'part 2 failed once')
  t.equal((await drain(await driver.get('retry/part.gz'))).sha256, src.sha256(), 'byte-exact after the retry')
  await driver.delete('retry/part.gz')
})

t.test('a part that fails for good stops the whole put at once', async (t) => {
  const driver = open()
  s3.fault = (req) => req.method === 'PUT' && /partNumber=2(&|$)/.test(req.url ?? '') ? { status: 403, code: 'AccessDenied', message: 'Access Denied' } : undefined
  t.teardown(() => { s3.fault = undefined })
  const size = 200 * MiB
  const src = byteSource(size, { chunkSize: 1 * MiB })
  let err: CloudPilotError | undefined
  const requests = await requestsDuring(async () => { err = await failure(driver.put('fail-fast/big.gz', src.stream)) })
  t.equal(err?.code, 'AUTH_FAILED', 'the part\'s own error')
  t.ok(src.emitted() < 64 * MiB, `the source was not read to the end (${Math.round(src.emitted() / MiB)} of ${size / MiB} MiB)`)
  t.ok(src.stream.destroyed, 'the source was destroyed')
  t.ok(requests.filter((r) => /partNumber=/.test(r.url)).length <= 6, 'no parts were uploaded after the failure')
  t.ok(requests.some((r) => r.method === 'DELETE' && /uploadId=/.test(r.url)), 'the multipart upload was aborted')
  t.equal(await driver.stat('fail-fast/big.gz'), null, 'nothing under the key')
})

t.test('abort while the upload is being completed: nothing stays under the key', async (t) => {
  const driver = open()
  const ac = new AbortController()
  s3.fault = (req) => {
    if (req.method === 'POST' && /uploadId=/.test(req.url ?? '')) {
      ac.abort()
      return { delayMs: 200 }
    }
    return undefined
  }
  t.teardown(() => { s3.fault = undefined })
  const requests = await requestsDuring(async () => {
    await t.rejects(driver.put('commit/race.gz', byteSource(20 * MiB).stream, { signal: ac.signal }), { name: 'AbortError' }, 'put rejects with an AbortError')
  })
  const complete = requests.findIndex((r) => r.method === 'POST' && /uploadId=/.test(r.url))
  const removal = requests.findIndex((r) => r.method === 'DELETE' && !/uploadId=/.test(r.url))
  t.ok(complete >= 0 && requests[complete]?.status === 200, 'the completion went through')
  t.ok(removal > complete, 'and the published object was deleted afterwards')
  t.equal(await driver.stat('commit/race.gz'), null, 'nothing under the key')
})

t.test('https to a plain-http port: TLS_ERROR', async (t) => {
  const err = await failure(open({ endpoint: s3.endpoint.replace('http:', 'https:') }).stat('x'))
  t.equal(err.code, 'TLS_ERROR')
})

// A self-signed certificate needs the openssl CLI to make one; under CI its absence is a failure, not a skip.
const tlsDir = await mkdtemp(path.join(os.tmpdir(), 'cloudpilot-tls-'))
t.teardown(() => rm(tlsDir, { recursive: true, force: true }))
const noOpenssl = await promisify(execFile)('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', path.join(tlsDir, 'key.pem'), '-out', path.join(tlsDir, 'cert.pem'), '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'])
  .then(() => false as const, (err: unknown) => `openssl could not make a test certificate: ${(err as Error).message}`)

t.test('a self-signed certificate: TLS_ERROR', { skip: process.env.CI === 'true' ? false : noOpenssl }, async (t) => {
  t.equal(noOpenssl, false, 'a certificate was made')
  const dir = tlsDir
  const tls = await startS3rver({ tls: { key: await readFile(path.join(dir, 'key.pem')), cert: await readFile(path.join(dir, 'cert.pem')) } })
  t.teardown(() => tls.close())
  const selfSigned = await failure(open({ endpoint: tls.endpoint }).test())
  t.equal(selfSigned.code, 'TLS_ERROR', 'a self-signed certificate')
  t.match(selfSigned.message, /certificate/i, 'the message says it is the certificate')
  t.equal(tls.requests.length, 0, 'no request got through')
})

t.test('SSRF guard on the endpoint', async (t) => {
  const make = (endpoint: string, allow: boolean): (() => StorageDriver) => () => open({ endpoint }, {}, {}, allow)
  for (const endpoint of ['http://169.254.169.254', 'http://[fe80::1]:9000', 'http://[::ffff:169.254.169.254]', 'http://0.0.0.0:9000', 'http://100.100.100.200']) {
    t.throws(make(endpoint, true), { code: 'ENDPOINT_NOT_ALLOWED' }, `${endpoint} refused even when private endpoints are allowed`)
  }
  for (const endpoint of [s3.endpoint, 'http://10.0.0.5:9000', 'http://[::1]:9000', 'https://192.168.1.10']) {
    t.throws(make(endpoint, false), { code: 'ENDPOINT_NOT_ALLOWED' }, `${endpoint} refused unless private endpoints are allowed`)
  }
  t.throws(() => open({ endpoint: 'ftp://example.com' }), { code: 'VALIDATION_FAILED' }, 'only http(s)')
  t.throws(() => open({ endpoint: 'https://user:pass@example.com' }), { code: 'VALIDATION_FAILED' }, 'no credentials in the URL')

  // A name is checked on connect: localhost resolves to loopback.
  const byName = open({ endpoint: `http://localhost:${s3.port}` }, {}, {}, false)
  const requests = await requestsDuring(async () => {
    const err = await failure(byName.stat('x'))
    t.equal(err.code, 'ENDPOINT_NOT_ALLOWED', 'a name that resolves to loopback is refused on connect')
  })
  t.equal(requests.length, 0, 'no request reached the server')
  t.equal(await open({ endpoint: `http://localhost:${s3.port}` }, {}, {}, true).stat('x'), null, 'allowed when private endpoints are allowed')
})

t.test('test(): happy path', async (t) => {
  const driver = open({ prefix: 'probe-prefix' })
  const requests = await requestsDuring(async () => {
    const result = await driver.test()
    t.type(result.latencyMs, 'number')
    t.ok(result.latencyMs >= 0 && result.latencyMs < 5000, `latencyMs ${result.latencyMs}`)
  })
  t.same(requests.map((r) => r.method), ['PUT', 'GET', 'DELETE'], 'write, read back, delete')
  t.ok(requests.every((r) => r.url.includes('/probe-prefix/.cloudpilot-probe-')), 'the probe lives under the configured prefix')
  t.same((await driver.list('')).items, [], 'nothing left behind')
})

t.test('a bucket redirect / wrong region is CONTAINER_NOT_FOUND with a region hint', async (t) => {
  s3.fault = () => ({ status: 301, code: 'PermanentRedirect', message: 'The bucket you are attempting to access must be addressed using the specified endpoint.' })
  t.teardown(() => { s3.fault = undefined })
  const err = await failure(open().list(''))
  t.equal(err.code, 'CONTAINER_NOT_FOUND')
  t.match(err.hint, /region/)
})

t.test('get: the range asked for, even when the server answers a larger one', async (t) => {
  // s3rver reads "bytes=0-0" as the whole object; S3 answers one byte.
  const driver = open()
  const data = Buffer.from('0123456789')
  await driver.put('range/ten.txt', Readable.from([data]))
  t.equal((await readAll(await driver.get('range/ten.txt', { range: { start: 0, end: 0 } }))).toString(), '0')
  t.equal((await readAll(await driver.get('range/ten.txt', { range: { start: 0, end: 3 } }))).toString(), '0123')
  await driver.delete('range/ten.txt')
})

t.test('no error message ever contains the secret key', async (t) => {
  t.ok(seen.length >= 20, `${seen.length} errors collected`)
  for (const err of seen) {
    const e = err as CloudPilotError
    const texts = [e.message, e.hint, String(e), JSON.stringify(e.toData?.() ?? {}), e.stack ?? '', String((e.cause as Error | undefined)?.message ?? '')]
    t.notOk(texts.some((text) => text.includes(SECRET)), `${e.code}: ${e.message.slice(0, 80)}`)
  }
})
