/**
 * The sftp driver's authentication, host key verification and failure codes against a real OpenSSH server, with
 * connection faults injected by a TCP relay in front of it (helpers/tcp-proxy.ts).
 *
 * Codes SFTP can produce: AUTH_FAILED (credentials, host key, permissions), UNREACHABLE (refused, silent, not
 * SSH, connection lost), CONTAINER_NOT_FOUND (the destination directory). SFTP runs over SSH, not TLS: there is no
 * certificate to fail and TLS_ERROR never comes from this driver (the host key check is its counterpart).
 */
import t from 'tap'
import { chmod, chown, mkdir, readdir, writeFile } from 'node:fs/promises'
import http, { type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import path from 'node:path'
import { Readable } from 'node:stream'
import { CloudPilotError } from '@cloudpilot/protocol'
import type { SftpConfig, SftpCredentials } from '@cloudpilot/protocol'
import { SftpDriver, type SftpTuning } from '../src/sftp.ts'
import { byteSource, readAll } from './helpers/byte-source.ts'
import { gate } from './helpers/service-gate.ts'
import { freePort, sshdUnavailable, startSshd } from './helpers/sshd.ts'
import { startTcpProxy } from './helpers/tcp-proxy.ts'

const FAST: Partial<SftpTuning> = { readyTimeoutMs: 3000, retry: { attempts: 3, baseDelayMs: 20, maxDelayMs: 100 } }

if (gate(t, await sshdUnavailable())) {
  const sshd = await startSshd()
  t.teardown(() => sshd.close())
  const proxy = await startTcpProxy(sshd.port)
  t.teardown(() => proxy.close())
  const base = path.join(sshd.root, 'dest')
  await mkdir(base)
  await chown(base, sshd.uid, sshd.gid)

  /** Every error seen: checked at the end for secrets. */
  const seen: unknown[] = []
  const warnings: Array<{ message: string, details: Record<string, unknown> }> = []

  const open = (config: Partial<SftpConfig> = {}, credentials: SftpCredentials = { privateKey: sshd.privateKey }, tuning: Partial<SftpTuning> = FAST, allowPrivateEndpoints = true): SftpDriver => {
    const driver = new SftpDriver(
      { host: sshd.host, port: proxy.port, username: sshd.username, path: base, hostKeyFingerprint: sshd.hostKeyFingerprint, ...config },
      credentials,
      { allowPrivateEndpoints, onWarning: (message, details) => { warnings.push({ message, details }) } },
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

  async function connectionsDuring (fn: () => Promise<unknown>): Promise<number> {
    const before = proxy.connections()
    await fn()
    return proxy.connections() - before
  }

  const data = (text = 'backup bytes'): Readable => Readable.from([Buffer.from(text)])

  t.test('every way to authenticate works', async (t) => {
    for (const [label, credentials] of [
      ['private key', { privateKey: sshd.privateKey }],
      ['password', { password: sshd.password }],
      ['encrypted private key + passphrase', { privateKey: sshd.encryptedKey, passphrase: sshd.passphrase }],
      ['key pasted with surrounding blank lines', { privateKey: `\n\n${sshd.privateKey}\n \n` }],
    ] as Array<[string, SftpCredentials]>) {
      const result = await open({}, credentials).test()
      t.ok(result.latencyMs >= 0, `${label}: test() passes`)
      t.equal(result.hostKeyFingerprint, sshd.hostKeyFingerprint, `${label}: reports the host key it verified`)
    }
    t.ok((await open({ hostKeyFingerprint: sshd.hostKeyMd5 }).test()).latencyMs >= 0, 'a legacy MD5 fingerprint pins too')
    t.ok((await open({ hostKeyFingerprint: `${sshd.hostKeyFingerprint}=` }).test()).latencyMs >= 0, 'base64 padding in the pinned fingerprint is accepted')
  })

  t.test('bad credentials: AUTH_FAILED, never retried', async (t) => {
    for (const [label, credentials, pattern] of [
      ['wrong password', { password: 'wrong-Password-123' }, /refused the credentials/],
      ['a key the server does not know', { privateKey: sshd.strangerKey }, /refused the credentials/],
      ['encrypted key without its passphrase', { privateKey: sshd.encryptedKey }, /private key cannot be used/],
      ['encrypted key with a wrong passphrase', { privateKey: sshd.encryptedKey, passphrase: 'wrong passphrase 42' }, /private key cannot be used/],
      ['something that is not a key', { privateKey: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIP not a private key' }, /private key cannot be used/],
    ] as Array<[string, SftpCredentials, RegExp]>) {
      let err: CloudPilotError | undefined
      const connections = await connectionsDuring(async () => { err = await failure(open({}, credentials).test()) })
      t.equal(err?.code, 'AUTH_FAILED', `${label}: AUTH_FAILED`)
      t.match(err?.message, pattern, `${label}: says why`)
      t.equal(err?.retryable, false, `${label}: not retryable`)
      t.ok(connections <= 1, `${label}: at most one connection, no retry (${connections})`)
      t.ok((err?.hint.length ?? 0) > 20, `${label}: with a hint`)
    }
  })

  t.test('host key pinned and matching: connects; not matching: AUTH_FAILED before any credential is sent', async (t) => {
    const failedBefore = (sshd.log().match(/Failed password/g) ?? []).length
    const wrong = 'SHA256:' + Buffer.alloc(32, 7).toString('base64').replace(/=+$/, '')
    const err = await failure(open({ hostKeyFingerprint: wrong }, { password: 'a-password-that-is-never-sent' }).test())
    t.equal(err.code, 'AUTH_FAILED', 'AUTH_FAILED')
    t.match(err.message, /does not match the pinned hostKeyFingerprint/, 'says the host key does not match')
    t.match(err.message, sshd.hostKeyFingerprint, 'names the key the server presented')
    t.match(err.message, wrong, 'and the pinned one')
    t.match(err.hint, /ssh-keygen -lf/, 'the hint says how to read the right fingerprint on the server')
    await new Promise((resolve) => setTimeout(resolve, 100))
    t.equal((sshd.log().match(/Failed password/g) ?? []).length, failedBefore, 'the password was never sent to the server')
    t.throws(() => open({ hostKeyFingerprint: 'aa:bb' }), { code: 'VALIDATION_FAILED' }, 'a malformed fingerprint is refused when the driver is made')
  })

  t.test('host key not pinned and no trustOnFirstUse: refused, with the fingerprint to pin', async (t) => {
    const err = await failure(open({ hostKeyFingerprint: undefined }).test())
    t.equal(err.code, 'AUTH_FAILED')
    t.match(err.message, /host key is not pinned/)
    t.match(err.message, sshd.hostKeyFingerprint, 'gives the fingerprint seen')
    t.match(err.message, /trustOnFirstUse/, 'and names the opt-in')
  })

  t.test('trustOnFirstUse: accepts the key seen first, reports it, and holds the driver to it', async (t) => {
    const other = await startSshd()
    t.teardown(() => other.close())
    t.teardown(() => { proxy.targetPort = sshd.port })
    const before = warnings.length
    const driver = open({ hostKeyFingerprint: undefined, trustOnFirstUse: true })
    const result = await driver.test()
    t.equal(result.hostKeyFingerprint, sshd.hostKeyFingerprint, 'test() returns the fingerprint to pin')
    t.equal(driver.hostKeyFingerprint, sshd.hostKeyFingerprint, 'also readable on the driver')
    const told = warnings.slice(before)
    t.equal(told.length, 1, 'the operator is told once')
    t.equal(told[0]?.details.hostKeyFingerprint, sshd.hostKeyFingerprint, 'with the fingerprint')
    t.match(told[0]?.message, /pin it as hostKeyFingerprint/)

    // Someone else answers on the same address (a reinstalled server, or a man in the middle).
    proxy.targetPort = other.port
    proxy.dropAll()
    const err = await failure(driver.stat('x.sql.gz'))
    t.equal(err.code, 'AUTH_FAILED', 'a different key later in the driver\'s life is refused')
    t.match(err.message, /does not match/)
  })

  t.test('unreachable: refused, silent, not SSH; transient failures are retried', async (t) => {
    const closed = await freePort()
    let err = await failure(open({ port: closed }).test())
    t.equal(err.code, 'UNREACHABLE', 'connection refused: UNREACHABLE')
    t.equal(err.retryable, true, 'retryable')
    t.match(err.message, new RegExp(`127\\.0\\.0\\.1:${closed}`), 'names host and port')

    t.teardown(() => { proxy.fault = undefined })
    proxy.fault = () => 'reset'
    let connections = await connectionsDuring(async () => { err = await failure(open().test()) })
    t.equal(err.code, 'UNREACHABLE', 'reset on connect: UNREACHABLE')
    t.equal(connections, 3, 'after 3 attempts')

    proxy.fault = () => 'hang'
    const started = performance.now()
    connections = await connectionsDuring(async () => { err = await failure(open({}, undefined, { ...FAST, readyTimeoutMs: 300, retry: { attempts: 2, baseDelayMs: 10, maxDelayMs: 10 } }).test()) })
    const ms = performance.now() - started
    t.equal(err.code, 'UNREACHABLE', 'a server that never answers: UNREACHABLE')
    t.match(err.message, /handshake/)
    t.ok(ms >= 600 && ms < 3000, `after the handshake timeout, twice (${Math.round(ms)} ms, ${connections} connections)`)

    const first = proxy.connections() + 1
    proxy.fault = (n) => n === first ? 'reset' : undefined
    connections = await connectionsDuring(async () => { t.ok((await open().test()).latencyMs >= 0, 'a reset first connection is retried and the test passes') })
    t.equal(connections, 2, 'two connections')
    proxy.fault = undefined

    const web: Server = http.createServer((_req, res) => { res.end('hello') })
    await new Promise<void>((resolve) => web.listen(0, '127.0.0.1', () => resolve()))
    t.teardown(() => new Promise<void>((resolve) => { web.closeAllConnections(); web.close(() => resolve()) }))
    err = await failure(open({ port: (web.address() as AddressInfo).port }).test())
    t.equal(err.code, 'UNREACHABLE', 'an HTTP server on the port: UNREACHABLE')
    t.match(err.hint, /port/, 'the hint points at the port')
  })

  t.test('a connection lost between calls is replaced; one lost during a put fails it and leaves no part file', async (t) => {
    const driver = open()
    await driver.put('lost/a.sql.gz', data('first'))
    proxy.dropAll()
    t.equal((await driver.stat('lost/a.sql.gz'))?.sizeBytes, 5, 'the next call reconnects transparently')

    const before = warnings.length
    const src = byteSource(64 * 1024 * 1024, { chunkSize: 256 * 1024, onProgress: (n) => { if (n >= 8 * 1024 * 1024 && n < 8 * 1024 * 1024 + 256 * 1024) proxy.dropAll() } })
    const err = await failure(driver.put('lost/b.sql.gz', src.stream))
    t.equal(err.code, 'UNREACHABLE', 'the put fails UNREACHABLE')
    t.equal(err.retryable, true, 'retryable (the job may run again)')
    t.ok(src.stream.destroyed, 'the source was destroyed')
    t.same((await readdir(path.join(base, 'lost'))).sort(), ['a.sql.gz'], 'no part file and nothing under the key: removed over a new connection')
    t.equal(warnings.length, before, 'no warning needed')

    await driver.put('lost/c.bin', byteSource(12 * 1024 * 1024).stream)
    const stream = await driver.get('lost/c.bin')
    let read = 0
    const readErr = await failure((async () => {
      for await (const chunk of stream) {
        read += (chunk as Buffer).length
        if (read >= 1024 * 1024 && read - (chunk as Buffer).length < 1024 * 1024) proxy.dropAll()
      }
    })())
    t.equal(readErr.code, 'UNREACHABLE', 'a download cut half way fails UNREACHABLE (it does not hang)')
    t.ok(read < 12 * 1024 * 1024, 'before the end')
    await driver.delete('lost/a.sql.gz')
    await driver.delete('lost/c.bin')
  })

  t.test('the destination directory is missing or not a directory: CONTAINER_NOT_FOUND on every call', async (t) => {
    await writeFile(path.join(sshd.root, 'a-file'), 'x')
    for (const dir of [path.join(sshd.root, 'does-not-exist'), path.join(sshd.root, 'a-file')]) {
      const driver = open({ path: dir })
      for (const [name, call] of [
        ['test()', () => driver.test()],
        ['put', () => driver.put('x/y.gz', data())],
        ['get', () => driver.get('x/y.gz')],
        ['stat', () => driver.stat('x/y.gz')],
        ['list', () => driver.list('')],
        ['delete', () => driver.delete('x/y.gz')],
      ] as Array<[string, () => Promise<unknown>]>) {
        const err = await failure(call())
        t.equal(err.code, 'CONTAINER_NOT_FOUND', `${path.basename(dir)}: ${name}`)
      }
    }
    const err = await failure(open({ path: path.join(sshd.root, 'does-not-exist') }).test())
    t.match(err.message, /does-not-exist does not exist/, 'names the directory')
    t.match(err.hint, /Create the directory/, 'says what to do')
  })

  t.test('no permission: AUTH_FAILED with a permission hint', async (t) => {
    const locked = path.join(sshd.root, 'root-only')
    await mkdir(locked, { mode: 0o755 }) // owned by root: the SSH user may read, not write
    await writeFile(path.join(locked, 'secret.sql.gz'), 'root only', { mode: 0o600 })
    await chmod(locked, 0o755)
    const driver = open({ path: locked })
    let err = await failure(driver.put('x.sql.gz', data()))
    t.equal(err.code, 'AUTH_FAILED', 'put into a directory it may not write')
    t.match(err.hint, /write access/)
    err = await failure(driver.test())
    t.equal(err.code, 'AUTH_FAILED', 'test()')
    err = await failure((async () => { await readAll(await driver.get('secret.sql.gz')) })())
    t.equal(err.code, 'AUTH_FAILED', 'reading a file it may not read')
    t.same((await readdir(locked)).sort(), ['secret.sql.gz'], 'nothing written, no part files')
  })

  t.test('a file where a directory of the key must be: UPLOAD_FAILED, not retried', async (t) => {
    const driver = open()
    await driver.put('blocker', data('i am a file'))
    const err = await failure(driver.put('blocker/below.sql.gz', data()))
    t.equal(err.code, 'UPLOAD_FAILED')
    t.equal(err.retryable, false)
    await driver.delete('blocker')
  })

  t.test('an abort while connecting returns at once', async (t) => {
    proxy.fault = () => 'hang'
    t.teardown(() => { proxy.fault = undefined })
    const driver = open({}, undefined, { ...FAST, readyTimeoutMs: 10_000 })
    const started = performance.now()
    await t.rejects(driver.test({ signal: AbortSignal.timeout(150) }), { name: 'AbortError' })
    t.ok(performance.now() - started < 1000, `settled ${Math.round(performance.now() - started)} ms after the call`)
  })

  t.test('SSRF guard on the host', async (t) => {
    t.throws(() => open({ host: '169.254.169.254' }), { code: 'ENDPOINT_NOT_ALLOWED' }, 'link-local refused even when private endpoints are allowed')
    t.throws(() => open({ host: '127.0.0.1' }, undefined, FAST, false), { code: 'ENDPOINT_NOT_ALLOWED' }, 'loopback refused unless allowed')
    const connections = await connectionsDuring(async () => {
      const err = await failure(open({ host: 'localhost' }, undefined, FAST, false).test())
      t.equal(err.code, 'ENDPOINT_NOT_ALLOWED', 'a name that resolves to loopback is refused on connect')
    })
    t.equal(connections, 0, 'no connection was made')
  })

  t.test('configuration is checked when the driver is made', async (t) => {
    t.throws(() => open({}, {}), { code: 'VALIDATION_FAILED' }, 'neither password nor key')
    t.throws(() => open({ port: 70000 }), { code: 'VALIDATION_FAILED' }, 'port out of range')
    t.throws(() => open({ host: 'user@example.com' }), { code: 'VALIDATION_FAILED' }, 'user@ in the host')
    t.throws(() => open({ path: '/srv/../etc' }), { code: 'VALIDATION_FAILED' }, '.. in the path')
  })

  t.test('no error message or warning ever contains the password or passphrase', async (t) => {
    t.ok(seen.length >= 15, `${seen.length} errors collected`)
    const secrets = [sshd.password, sshd.passphrase, 'wrong-Password-123', 'wrong passphrase 42', 'a-password-that-is-never-sent']
    for (const err of seen) {
      const e = err as CloudPilotError
      const texts = [e.message, e.hint, String(e), JSON.stringify(e.toData?.() ?? {}), e.stack ?? '']
      t.notOk(texts.some((text) => secrets.some((s) => text.includes(s))), `${e.code}: ${e.message.slice(0, 80)}`)
    }
    t.notOk(JSON.stringify(warnings).includes(sshd.password), 'warnings neither')
  })
}
