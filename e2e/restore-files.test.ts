import t from 'tap'
import path from 'node:path'
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { chmod, link, lstat, mkdir, readFile, readlink, readdir, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises'
import zlib from 'node:zlib'
import tar from 'tar-stream'
import { startCoordinator, startAgent, waitOnline, tempDir } from '../coordinator/test/helpers/processes.ts'
import { psql, tempPostgresDatabase } from '../coordinator/test/helpers/databases.ts'
import { createPlan, completedBackup, restore } from './helpers.ts'

// The coordinator's own database is known here: one test replaces an archive and its recorded checksum.
const store = await tempPostgresDatabase(t, 'cp_coord')
const coordinator = await startCoordinator(t, { databaseUrl: store.url })
const agent = await startAgent(t, coordinator)
await waitOnline(coordinator, agent.serverId)

async function makeTree (tt: Parameters<typeof tempDir>[0]): Promise<string> {
  const site = path.join(await tempDir(tt, 'cp-files'), 'site')
  await mkdir(path.join(site, 'conf', 'empty'), { recursive: true })
  await writeFile(path.join(site, 'conf', 'app.conf'), 'key = value\n')
  await chmod(path.join(site, 'conf', 'app.conf'), 0o600)
  await writeFile(path.join(site, 'run.sh'), '#!/bin/sh\necho hi\n')
  await chmod(path.join(site, 'run.sh'), 0o750)
  await link(path.join(site, 'run.sh'), path.join(site, 'run-again.sh'))
  await symlink('conf/app.conf', path.join(site, 'current.conf'))
  const mtime = new Date('2023-06-01T10:00:00Z')
  await utimes(path.join(site, 'conf', 'app.conf'), mtime, mtime)
  await utimes(path.join(site, 'conf'), mtime, mtime)
  return site
}

t.test('a files backup kept on the server, restored there into a new directory, then over it only with replaceExisting', async (t) => {
  const site = await makeTree(t)
  const planId = await createPlan(coordinator, { serverId: agent.serverId, type: 'files', source: { paths: [site] } })
  const b = await completedBackup(coordinator, planId)
  t.equal(b.destinationId, null, 'no destination: the archive is only in the agent\'s spool')
  const targetPath = path.join(await tempDir(t, 'cp-files-restore'), 'restored')

  const r = await restore(coordinator, b.id, { targetPath })
  t.equal(r.status, 'completed', JSON.stringify(r.error))
  t.match(r, { targetPath, parts: ['files'], connection: null, targetDatabase: null })
  t.match(r.details.restored, { archive: 'spool', files: { targetPath, files: 2, hardlinks: 1, symlinks: 1 } })
  const out = path.join(targetPath, site.slice(1))
  t.equal(await readFile(path.join(out, 'conf', 'app.conf'), 'utf8'), 'key = value\n')
  t.equal((await stat(path.join(out, 'conf', 'app.conf'))).mode & 0o7777, 0o600, 'file mode')
  t.equal((await stat(path.join(out, 'run.sh'))).mode & 0o7777, 0o750, 'executable mode')
  t.equal((await stat(path.join(out, 'conf', 'app.conf'))).mtime.toISOString(), '2023-06-01T10:00:00.000Z', 'file mtime')
  t.equal((await stat(path.join(out, 'conf'))).mtime.toISOString(), '2023-06-01T10:00:00.000Z', 'directory mtime')
  t.equal(await readlink(path.join(out, 'current.conf')), 'conf/app.conf', 'symlink')
  t.equal((await stat(path.join(out, 'run-again.sh'))).ino, (await stat(path.join(out, 'run.sh'))).ino, 'hard link')
  t.ok((await stat(path.join(out, 'conf', 'empty'))).isDirectory(), 'empty directory')

  await writeFile(path.join(out, 'conf', 'app.conf'), 'changed after the restore\n')
  const refused = await restore(coordinator, b.id, { targetPath })
  t.equal(refused.status, 'failed')
  t.equal(refused.error.code, 'TARGET_NOT_EMPTY')
  t.match(refused.error.message, /Nothing was written to the target/)
  t.equal(await readFile(path.join(out, 'conf', 'app.conf'), 'utf8'), 'changed after the restore\n', 'untouched')
  const replaced = await restore(coordinator, b.id, { targetPath, replaceExisting: true })
  t.equal(replaced.status, 'completed', JSON.stringify(replaced.error))
  t.equal(await readFile(path.join(out, 'conf', 'app.conf'), 'utf8'), 'key = value\n', 'written over with replaceExisting')
})

t.test('in place: targetPath "/" with replaceExisting puts the backed-up files back where they were', async (t) => {
  const site = await makeTree(t)
  const planId = await createPlan(coordinator, { serverId: agent.serverId, type: 'files', source: { paths: [site] } })
  const b = await completedBackup(coordinator, planId)
  await writeFile(path.join(site, 'conf', 'app.conf'), 'broken by a deploy\n')
  await rm(path.join(site, 'run.sh'))
  const notInBackup = path.join(site, 'new-file.txt')
  await writeFile(notInBackup, 'made after the backup\n')
  const refused = await restore(coordinator, b.id, { targetPath: '/' })
  t.equal(refused.error?.code, 'TARGET_NOT_EMPTY', 'never in place without replaceExisting')
  const r = await restore(coordinator, b.id, { targetPath: '/', replaceExisting: true })
  t.equal(r.status, 'completed', JSON.stringify(r.error))
  t.equal(await readFile(path.join(site, 'conf', 'app.conf'), 'utf8'), 'key = value\n')
  t.equal(await readFile(path.join(site, 'run.sh'), 'utf8'), '#!/bin/sh\necho hi\n')
  t.ok(existsSync(notInBackup), 'files that are not in the backup are left alone')
})

t.test('ARCHIVE_NOT_REACHABLE: an archive kept only on its server (spool copy or local destination) is not restored onto another', async (t) => {
  const other = await startAgent(t, coordinator)
  await waitOnline(coordinator, other.serverId)
  const site = await makeTree(t)
  const spoolPlan = await createPlan(coordinator, { serverId: agent.serverId, type: 'files', source: { paths: [site] } })
  const spoolOnly = await completedBackup(coordinator, spoolPlan)
  const destDir = await tempDir(t, 'cp-local-dest')
  const dest = await coordinator.api.post('/api/v1/destinations', { name: 'second disk', type: 'local', config: { path: destDir } })
  const localPlan = await createPlan(coordinator, { serverId: agent.serverId, type: 'files', destinationId: dest.body.id, source: { paths: [site] } })
  const local = await completedBackup(coordinator, localPlan)
  for (const b of [spoolOnly, local]) {
    const r = await coordinator.api.post(`/api/v1/backups/${b.id}/restore`, { targetServerId: other.serverId, targetPath: '/tmp/never' })
    t.equal(r.status, 409, JSON.stringify(r.body))
    t.equal(r.body.error.code, 'ARCHIVE_NOT_REACHABLE')
    t.match(r.body.error.message, agent.serverId)
    t.match(r.body.error.hint, /server that made it/)
  }
  t.notOk(existsSync('/tmp/never'))
})

/** A .tar.gz with the given entries, written with tar-stream exactly as given. */
async function craft (entries: Array<{ name: string, body?: string, type?: 'file' | 'symlink', linkname?: string }>): Promise<Buffer> {
  const pack = tar.pack()
  const chunks: Buffer[] = []
  const done = (async () => { for await (const c of pack) chunks.push(c as Buffer) })()
  for (const e of entries) {
    await new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null): void => { if (err) reject(err); else resolve() }
      if (e.body === undefined) pack.entry({ name: e.name, type: e.type ?? 'file', ...(e.linkname === undefined ? {} : { linkname: e.linkname }) }, cb)
      else pack.entry({ name: e.name }, Buffer.from(e.body), cb)
    })
  }
  pack.finalize()
  await done
  return zlib.gzipSync(Buffer.concat(chunks))
}

t.test('UNSAFE_ARCHIVE_ENTRY through the API: a tampered archive (with a matching checksum) cannot write outside targetPath', async (t) => {
  const site = await makeTree(t)
  const destDir = await tempDir(t, 'cp-tampered')
  const dest = await coordinator.api.post('/api/v1/destinations', { name: 'disk', type: 'local', config: { path: destDir } })
  const planId = await createPlan(coordinator, { serverId: agent.serverId, type: 'files', destinationId: dest.body.id, source: { paths: [site] } })
  const b = await completedBackup(coordinator, planId)
  const base = await tempDir(t, 'cp-unsafe-api')
  const targetPath = path.join(base, 'target')
  const escaped = path.join(base, 'escaped.txt')
  // Someone with write access to the destination and the coordinator's database replaced both: the checksum
  // passes, and the entries themselves are what stops it.
  for (const [what, archive] of [
    ['..', await craft([{ name: 'fine.txt', body: 'ok\n' }, { name: '../escaped.txt', body: 'escaped\n' }])],
    ['symlink', await craft([{ name: 'door', type: 'symlink', linkname: base }, { name: 'door/escaped.txt', body: 'escaped\n' }])],
  ] as const) {
    await writeFile(path.join(destDir, b.objectKey), archive)
    await psql(store.name, `update backups set sha256 = '${createHash('sha256').update(archive).digest('hex')}', size_bytes = ${archive.length} where id = '${b.id}'`)
    await rm(targetPath, { recursive: true, force: true })
    const r = await restore(coordinator, b.id, { targetPath })
    t.equal(r.status, 'failed', what)
    t.equal(r.error.code, 'UNSAFE_ARCHIVE_ENTRY', `${what}: ${r.error.message}`)
    t.match(r.error.message, /nothing was written outside the target path/)
    t.match(r.error.message, `Files under ${targetPath} may be partially restored`)
    t.match(r.error.hint, `remove what the restore wrote under ${targetPath}`)
    t.notOk(existsSync(escaped), `${what}: nothing escaped`)
    t.same((await readdir(base)).sort(), ['target'], `${what}: only the target was written`)
  }
  t.ok((await lstat(path.join(targetPath, 'door'))).isSymbolicLink(), 'the link itself is inside the target, harmless')
})
