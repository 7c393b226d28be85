/**
 * The sftp driver against a real OpenSSH server (Debian's sshd on a loopback port, see helpers/sshd.ts): the
 * conformance suite with key authentication, what the run left on the server, and the upload rate limit.
 */
import t from 'tap'
import { readdir } from 'node:fs/promises'
import path from 'node:path'
import { SftpDriver } from '../src/sftp.ts'
import { runConformance } from './conformance.ts'
import { byteSource, drain } from './helpers/byte-source.ts'
import { gate } from './helpers/service-gate.ts'
import { sshdUnavailable, startSshd } from './helpers/sshd.ts'

if (gate(t, await sshdUnavailable())) {
  const sshd = await startSshd()
  t.teardown(() => sshd.close())
  const warnings: Array<{ message: string, details: Record<string, unknown> }> = []
  const base = path.join(sshd.root, 'backups')
  const { mkdir, chown } = await import('node:fs/promises')
  await mkdir(base)
  await chown(base, sshd.uid, sshd.gid)

  const open = (config: Record<string, unknown> = {}): SftpDriver => new SftpDriver(
    { host: sshd.host, port: sshd.port, username: sshd.username, path: base, hostKeyFingerprint: sshd.hostKeyFingerprint, ...config },
    { privateKey: sshd.privateKey },
    { allowPrivateEndpoints: true, onWarning: (message, details) => { warnings.push({ message, details }) } },
  )

  /** Part files of interrupted puts anywhere under the destination directory (read straight from the disk). */
  async function partFiles (): Promise<string[]> {
    const entries = await readdir(base, { recursive: true })
    return entries.filter((name) => /\.part-[0-9a-f]{12}$/.test(name))
  }

  runConformance(t, 'sftp (openssh-server)', async () => open(), { leftovers: partFiles })

  t.test('sftp: what the conformance run left on the server', async (t) => {
    const files = (await readdir(base, { recursive: true, withFileTypes: true })).filter((e) => e.isFile())
    t.same(files.map((f) => f.name), [], 'no files: every object was deleted, no part files')
    t.same(warnings, [], 'no warnings (every part file could be removed)')
    t.notMatch(sshd.log(), /Nagle|fatal/i, 'sshd logged nothing fatal')
  })

  t.test('sftp: objects are private files of the SSH user', async (t) => {
    const driver = open()
    t.teardown(() => driver.close())
    await driver.put('mode/one.sql.gz', byteSource(1000).stream)
    const { stat } = await import('node:fs/promises')
    const st = await stat(path.join(base, 'mode/one.sql.gz'))
    t.equal(st.mode & 0o777, 0o600, 'mode 0600')
    t.equal(st.uid, sshd.uid, 'owned by the SSH user')
    await driver.delete('mode/one.sql.gz')
  })

  t.test('sftp: rateLimitBytesPerSecond holds the upload to the configured rate', async (t) => {
    const limited = open({ rateLimitBytesPerSecond: 1024 * 1024 })
    t.teardown(() => limited.close())
    await limited.test() // connect first: the measurement is about the bytes
    const src = byteSource(1536 * 1024, { chunkSize: 64 * 1024 })
    const started = performance.now()
    await limited.put('rate/limited.bin', src.stream)
    const seconds = (performance.now() - started) / 1000
    t.ok(seconds >= 1.3 && seconds < 5, `1.5 MiB at 1 MiB/s took ${seconds.toFixed(2)} s`)
    t.equal((await drain(await limited.get('rate/limited.bin'))).sha256, src.sha256(), 'bytes intact')
    await limited.delete('rate/limited.bin')
  })
}
