/**
 * The local driver's failure codes. Permission failures need an unprivileged process: these tests run as root
 * on the project's machines and root ignores permission bits, so the calls run in a child started as `nobody`
 * (as a normal user the directory is simply made read-only).
 */
import t from 'tap'
import { execFile } from 'node:child_process'
import { chmod, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { Readable } from 'node:stream'
import { promisify } from 'node:util'
import { LocalDriver } from '../src/local.ts'

const tmp = await mkdtemp(path.join(os.tmpdir(), 'cloudpilot-local-errors-'))
t.teardown(() => rm(tmp, { recursive: true, force: true }))

function data (): Readable {
  return Readable.from([Buffer.from('backup bytes')])
}

t.test('relative path: VALIDATION_FAILED', async (t) => {
  t.throws(() => new LocalDriver({ path: 'backups/here' }), { code: 'VALIDATION_FAILED' })
})

for (const [label, make] of [
  ['a directory that does not exist', async () => path.join(tmp, 'does-not-exist')],
  ['a path whose parent is a regular file', async () => { await writeFile(path.join(tmp, 'a-file'), 'x'); return path.join(tmp, 'a-file', 'backups') }],
  ['a path that is a regular file', async () => { await writeFile(path.join(tmp, 'plain-file'), 'x'); return path.join(tmp, 'plain-file') }],
] as Array<[string, () => Promise<string>]>) {
  t.test(`${label}: CONTAINER_NOT_FOUND`, async (t) => {
    const root = await make()
    const driver = new LocalDriver({ path: root })
    await t.rejects(driver.put('db/x.sql.gz', data()), { code: 'CONTAINER_NOT_FOUND' }, 'put')
    await t.rejects(driver.test(), { code: 'CONTAINER_NOT_FOUND' }, 'test()')
    await t.rejects(driver.list(''), { code: 'CONTAINER_NOT_FOUND' }, 'list')
    await t.rejects(driver.get('db/x.sql.gz'), { code: 'CONTAINER_NOT_FOUND' }, 'get')
    await t.rejects(driver.stat('db/x.sql.gz'), { code: 'CONTAINER_NOT_FOUND' }, 'stat (not null: an unmounted disk is not an empty one)')
    await t.rejects(driver.delete('db/x.sql.gz'), { code: 'CONTAINER_NOT_FOUND' }, 'delete (retention must not count it as deleted)')
    const err: unknown = await driver.put('db/y.sql.gz', data()).catch((e: unknown) => e)
    t.match((err as { hint?: string }).hint, /Create the directory/, 'the hint says what to do')
  })
}

t.test('no write permission: AUTH_FAILED', async (t) => {
  const root = path.join(tmp, 'read-only')
  await mkdir(root, { mode: 0o755 })
  await writeFile(path.join(root, 'secret.sql.gz'), 'root only', { mode: 0o600 })
  await chmod(root, 0o555)
  t.teardown(() => chmod(root, 0o755))
  const calls = ['put:db/x.sql.gz', 'test', 'get:secret.sql.gz']
  let results: Array<{ call: string, ok?: boolean, code?: string }>
  if (process.getuid?.() === 0) {
    // root: run the driver as nobody (uid/gid 65534), who may read the repository but not write `root`.
    const script = new URL('./helpers/local-driver-child.ts', import.meta.url).pathname
    const { stdout } = await promisify(execFile)(process.execPath, [script, root, ...calls], { uid: 65534, gid: 65534, cwd: '/' })
    results = stdout.trim().split('\n').map((line) => JSON.parse(line) as { call: string, ok?: boolean, code?: string })
  } else {
    const driver = new LocalDriver({ path: root })
    results = []
    for (const call of calls) {
      const [what, key = ''] = call.split(':')
      const run = what === 'put' ? driver.put(key, data()) : what === 'test' ? driver.test() : driver.get(key).then(async (s) => { for await (const _c of s) { /* read */ } })
      results.push(await run.then(() => ({ call, ok: true }), (err: unknown) => ({ call, code: (err as { code?: string }).code ?? '' })))
    }
  }
  t.same(results.map((r) => [r.call, r.code]), [['put:db/x.sql.gz', 'AUTH_FAILED'], ['test', 'AUTH_FAILED'], ['get:secret.sql.gz', 'AUTH_FAILED']], 'put, test() and reading a file it may not read: AUTH_FAILED')
  t.same((await readdir(root)).sort(), ['secret.sql.gz'], 'nothing was written, no part files')
})
