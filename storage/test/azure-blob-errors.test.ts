/**
 * The azure_blob driver's failure codes against azurite, through an HTTP relay that records requests and injects
 * faults (helpers/http-fault-proxy.ts): bad keys and SAS tokens, a missing container, unreachable and hung
 * endpoints, TLS, what is and is not retried, fail-fast and abort at commit, SSRF, and no secret in any message.
 */
import t from 'tap'
import { Readable } from 'node:stream'
import {
  AccountSASPermissions, AccountSASResourceTypes, AccountSASServices, StorageSharedKeyCredential, generateAccountSASQueryParameters,
} from '@azure/storage-blob'
import { CloudPilotError } from '@cloudpilot/protocol'
import type { AzureBlobConfig, AzureBlobCredentials } from '@cloudpilot/protocol'
import { AzureBlobDriver, type AzureTuning } from '../src/azure-blob.ts'
import { azuriteUnavailable, startAzurite } from './helpers/azurite.ts'
import { byteSource, drain } from './helpers/byte-source.ts'
import { startHttpFaultProxy } from './helpers/http-fault-proxy.ts'
import { gate } from './helpers/service-gate.ts'
import { freePort } from './helpers/sshd.ts'
import { selfSignedCert } from './helpers/tls-cert.ts'

const MiB = 1024 * 1024
const FAST: Partial<AzureTuning> = { retryDelayMs: 20, maxRetryDelayMs: 100, tryTimeoutMs: 10_000 }
const WRONG_KEY = Buffer.from('wR0ng-Secret-Key-NeverShow-1234567890abcdef').toString('base64')

if (gate(t, azuriteUnavailable())) {
  const azurite = await startAzurite()
  t.teardown(() => azurite.close())
  const proxy = await startHttpFaultProxy(azurite.port)
  t.teardown(() => proxy.close())
  const accountUrl = `${proxy.origin}/${azurite.accountName}`
  const seen: unknown[] = []

  const open = (config: Partial<AzureBlobConfig> = {}, credentials: AzureBlobCredentials = { accountName: azurite.accountName, accountKey: azurite.accountKey }, tuning: Partial<AzureTuning> = FAST, allowPrivateEndpoints = true): AzureBlobDriver => {
    const driver = new AzureBlobDriver({ container: azurite.container, accountUrl, ...config }, credentials, { allowPrivateEndpoints }, tuning)
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

  async function requestsDuring (fn: () => Promise<unknown>): Promise<typeof proxy.requests> {
    const before = proxy.requests.length
    await fn()
    return proxy.requests.slice(before)
  }

  const sas = (permissions: string, expiresOn = new Date(Date.now() + 3600_000)): string => generateAccountSASQueryParameters({
    expiresOn,
    permissions: AccountSASPermissions.parse(permissions),
    resourceTypes: AccountSASResourceTypes.parse('sco').toString(),
    services: AccountSASServices.parse('b').toString(),
  }, new StorageSharedKeyCredential(azurite.accountName, azurite.accountKey)).toString()

  const everyCall = (driver: AzureBlobDriver): Array<[string, () => Promise<unknown>]> => [
    ['put (one block)', () => driver.put('x/small.gz', Readable.from([Buffer.from('x')]))],
    ['put (several blocks)', () => driver.put('x/large.gz', byteSource(10 * MiB).stream)],
    ['get', () => driver.get('x/small.gz')],
    ['stat', () => driver.stat('x/small.gz')],
    ['list', () => driver.list('x/')],
    ['delete', () => driver.delete('x/small.gz')],
    ['test()', () => driver.test()],
  ]

  t.test('wrong account key: AUTH_FAILED on every call, never retried', async (t) => {
    const driver = open({}, { accountName: azurite.accountName, accountKey: WRONG_KEY })
    for (const [name, call] of everyCall(driver)) {
      let err: CloudPilotError | undefined
      const requests = await requestsDuring(async () => { err = await failure(call()) })
      t.equal(err?.code, 'AUTH_FAILED', `${name}: AUTH_FAILED`)
      t.ok(requests.length <= 2, `${name}: no retries (${requests.length} requests)`)
      t.equal(err?.retryable, false, `${name}: not retryable`)
    }
    t.equal(await open().stat('x/small.gz'), null, 'nothing was written with the wrong key')
  })

  t.test('SAS tokens: expired is AUTH_FAILED; missing permissions is AUTH_FAILED with the permissions to grant', async (t) => {
    let err = await failure(open({}, { sasToken: sas('racwdl', new Date(Date.now() - 60_000)) }).test())
    t.equal(err.code, 'AUTH_FAILED', 'expired SAS')
    const readOnly = open({}, { sasToken: sas('rl') })
    err = await failure(readOnly.put('ro.gz', Readable.from([Buffer.from('x')])))
    t.equal(err.code, 'AUTH_FAILED', 'read-only SAS: put refused')
    t.match(err.hint, /sp=racwdl/, 'the hint names the SAS permissions needed')
    t.same((await readOnly.list('')).nextCursor, null, 'while listing works with it')
  })

  t.test('missing container: CONTAINER_NOT_FOUND on every call', async (t) => {
    const driver = open({ container: 'no-such-container' })
    for (const [name, call] of everyCall(driver)) {
      const err = await failure(call())
      t.equal(err.code, 'CONTAINER_NOT_FOUND', `${name}: CONTAINER_NOT_FOUND`)
      t.match(err.message, /no-such-container/, `${name}: names the container`)
    }
  })

  t.test('unreachable: refused, reset, silent', async (t) => {
    const closed = await freePort()
    const started = performance.now()
    let err = await failure(open({ accountUrl: `http://127.0.0.1:${closed}/${azurite.accountName}` }).test())
    t.equal(err.code, 'UNREACHABLE', 'connection refused: UNREACHABLE')
    t.equal(err.retryable, true)
    t.match(err.message, new RegExp(`127\\.0\\.0\\.1:${closed}`), 'names the endpoint')
    t.ok(performance.now() - started < 5000, 'within seconds')

    t.teardown(() => { proxy.fault = undefined })
    proxy.fault = () => ({ reset: true })
    let requests = await requestsDuring(async () => { err = await failure(open().stat('r.gz')) })
    t.equal(err.code, 'UNREACHABLE', 'reset: UNREACHABLE')
    t.equal(requests.length, 3, 'after 3 attempts')

    proxy.fault = () => ({ hang: true })
    const hangStart = performance.now()
    requests = await requestsDuring(async () => { err = await failure(open({}, undefined, { ...FAST, tryTimeoutMs: 300, maxTries: 2 }).stat('h.gz')) })
    const ms = performance.now() - hangStart
    t.equal(err.code, 'UNREACHABLE', 'no answer: UNREACHABLE')
    t.equal(requests.length, 2, 'two attempts')
    t.ok(ms >= 600 && ms < 5000, `after the try timeouts (${Math.round(ms)} ms)`)
  })

  t.test('transient errors are retried (bounded), client errors are not', async (t) => {
    t.teardown(() => { proxy.fault = undefined })
    const driver = open()
    const xml = (code: string): string => `<?xml version="1.0" encoding="utf-8"?><Error><Code>${code}</Code><Message>${code}</Message></Error>`
    proxy.fault = () => ({ status: 503, headers: { 'x-ms-error-code': 'ServerBusy', 'content-type': 'application/xml' }, body: xml('ServerBusy') })
    let err: CloudPilotError | undefined
    let requests = await requestsDuring(async () => { err = await failure(driver.list('')) })
    t.equal(err?.code, 'UPLOAD_FAILED', '503 ServerBusy: UPLOAD_FAILED after the attempts')
    t.equal(err?.retryable, true, 'retryable')
    t.equal(requests.length, 3, '3 attempts')

    proxy.fault = () => ({ status: 400, headers: { 'x-ms-error-code': 'InvalidInput', 'content-type': 'application/xml' }, body: xml('InvalidInput') })
    requests = await requestsDuring(async () => { err = await failure(driver.put('r.gz', Readable.from([Buffer.from('x')]))) })
    t.equal(err?.code, 'UPLOAD_FAILED', '400: UPLOAD_FAILED')
    t.equal(err?.retryable, false, 'not retryable')
    t.equal(requests.length, 1, 'not retried')
  })

  t.test('a block that fails once is retried and the blob is intact', async (t) => {
    const driver = open({}, undefined, { ...FAST, blockSize: 4 * MiB })
    let failed = 0
    proxy.fault = (req) => {
      if (req.method === 'PUT' && /comp=block(&|$)/.test(req.url ?? '') && failed === 0) { failed++; return { status: 500, headers: { 'x-ms-error-code': 'InternalError' }, body: '' } }
      return undefined
    }
    t.teardown(() => { proxy.fault = undefined })
    const src = byteSource(18 * MiB, { chunkSize: MiB })
    t.same(await driver.put('retry/block.gz', src.stream), { key: 'retry/block.gz', sizeBytes: 18 * MiB })
    t.equal(failed, 1, 'one block failed once')
    t.equal((await drain(await driver.get('retry/block.gz'))).sha256, src.sha256(), 'byte-exact after the retry')
    await driver.delete('retry/block.gz')
  })

  t.test('a block that fails for good stops the put at once; nothing is committed', async (t) => {
    const driver = open({}, undefined, { ...FAST, blockSize: 4 * MiB })
    let blocks = 0
    proxy.fault = (req) => {
      if (req.method === 'PUT' && /comp=block(&|$)/.test(req.url ?? '') && ++blocks === 2) return { status: 403, headers: { 'x-ms-error-code': 'AuthorizationPermissionMismatch', 'content-type': 'application/xml' }, body: '<?xml version="1.0"?><Error><Code>AuthorizationPermissionMismatch</Code><Message>no</Message></Error>' }
      return undefined
    }
    t.teardown(() => { proxy.fault = undefined })
    const src = byteSource(200 * MiB, { chunkSize: MiB })
    let err: CloudPilotError | undefined
    const requests = await requestsDuring(async () => { err = await failure(driver.put('fail-fast/big.gz', src.stream)) })
    t.equal(err?.code, 'AUTH_FAILED', 'the block\'s own error')
    t.ok(src.emitted() < 40 * MiB, `the source was not read to the end (${Math.round(src.emitted() / MiB)} of 200 MiB)`)
    t.ok(src.stream.destroyed, 'the source was destroyed')
    t.notOk(requests.some((r) => /comp=blocklist/.test(r.url)), 'no commit')
    t.equal(await driver.stat('fail-fast/big.gz'), null, 'nothing under the key')
  })

  t.test('abort while the block list is being committed: nothing stays under the key', async (t) => {
    const driver = open()
    const ac = new AbortController()
    proxy.fault = (req) => {
      if (req.method === 'PUT' && /comp=blocklist/.test(req.url ?? '')) { ac.abort(); return { delayMs: 200 } }
      return undefined
    }
    t.teardown(() => { proxy.fault = undefined })
    const requests = await requestsDuring(async () => {
      await t.rejects(driver.put('commit/race.gz', byteSource(10 * MiB).stream, { signal: ac.signal }), { name: 'AbortError' }, 'put rejects with an AbortError')
    })
    const commit = requests.findIndex((r) => /comp=blocklist/.test(r.url))
    const removal = requests.findIndex((r) => r.method === 'DELETE')
    t.ok(commit >= 0 && requests[commit]?.status === 201, 'the commit went through')
    t.ok(removal > commit, 'and the published blob was deleted afterwards')
    t.equal(await driver.stat('commit/race.gz'), null, 'nothing under the key')
  })

  const cert = await selfSignedCert()
  t.test('TLS: a self-signed certificate, and https to a plain-http port: TLS_ERROR', { skip: process.env.CI === 'true' ? false : (typeof cert === 'string' ? cert : false) }, async (t) => {
    if (typeof cert === 'string') { t.fail(cert); return }
    t.teardown(() => cert.remove())
    const secure = await startAzurite({ tls: { cert: cert.certFile, key: cert.keyFile } })
    t.teardown(() => secure.close())
    let err = await failure(open({ accountUrl: secure.accountUrl }).test())
    t.equal(err.code, 'TLS_ERROR', 'self-signed certificate')
    t.match(err.message, /certificate/i, 'says it is the certificate')
    err = await failure(open({ accountUrl: `https://127.0.0.1:${azurite.port}/${azurite.accountName}` }).stat('x'))
    t.equal(err.code, 'TLS_ERROR', 'https to an http port')
  })

  t.test('SSRF guard on the account URL', async (t) => {
    t.throws(() => open({ accountUrl: 'https://169.254.169.254/acct' }), { code: 'ENDPOINT_NOT_ALLOWED' }, 'metadata address refused even when private endpoints are allowed')
    t.throws(() => open({ accountUrl: 'https://10.1.2.3/acct' }, undefined, FAST, false), { code: 'ENDPOINT_NOT_ALLOWED' }, 'private address refused unless allowed')
    t.throws(() => open({ accountUrl }, undefined, FAST, false), { code: 'VALIDATION_FAILED' }, 'plain http only together with private endpoints')
    const before = proxy.requests.length
    const err = await failure(open({ accountUrl: `https://localhost:${proxy.port}/${azurite.accountName}` }, undefined, { ...FAST, maxTries: 1 }, false).stat('x'))
    t.equal(err.code, 'ENDPOINT_NOT_ALLOWED', 'a name that resolves to loopback is refused on connect')
    t.equal(proxy.requests.length, before, 'no request reached the server')
  })

  t.test('configuration is checked when the driver is made', async (t) => {
    t.throws(() => open({ container: 'Bad_Name' }), { code: 'VALIDATION_FAILED' }, 'container naming rules')
    t.throws(() => open({}, {}), { code: 'VALIDATION_FAILED' }, 'no credentials')
    t.throws(() => open({ accountUrl: `${accountUrl}?sv=x&sig=y` }), { code: 'VALIDATION_FAILED' }, 'a SAS in the account URL')
    t.throws(() => open({ accountUrl: undefined }, { sasToken: sas('racwdl') }), { code: 'VALIDATION_FAILED' }, 'a SAS token without an account URL')
    t.throws(() => open({}, { connectionString: 'UseDevelopmentStorage=true' }), { code: 'VALIDATION_FAILED' }, 'UseDevelopmentStorage')
  })

  t.test('no error message ever contains the account key or a SAS signature', async (t) => {
    t.ok(seen.length >= 20, `${seen.length} errors collected`)
    const signature = new URLSearchParams(sas('racwdl')).get('sig') ?? 'none'
    for (const err of seen) {
      const e = err as CloudPilotError
      const texts = [e.message, e.hint, String(e), JSON.stringify(e.toData?.() ?? {}), e.stack ?? '']
      t.notOk(texts.some((text) => text.includes(WRONG_KEY) || text.includes(azurite.accountKey) || text.includes(signature)), `${e.code}: ${e.message.slice(0, 80)}`)
    }
  })
}
