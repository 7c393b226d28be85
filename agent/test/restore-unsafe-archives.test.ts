import t from 'tap'
import { createHash, randomUUID } from 'node:crypto'
import { existsSync } from 'node:fs'
import { lstat, mkdir, readFile, readlink, readdir, stat, symlink, writeFile } from 'node:fs/promises'
import path from 'node:path'
import zlib from 'node:zlib'
import pino from 'pino'
import tar from 'tar-stream'
import { CloudPilotError, type RestoreJob } from '@cloudpilot/protocol'
import { openDestination } from '@cloudpilot/storage'
import { createRunRestore } from '../src/restore/run-restore.ts'
import { nothingWritten, type RestoreContext } from '../src/restore/restore-context.ts'
import { tempDir } from './helpers/backup-fixtures.ts'

type Header = Parameters<ReturnType<typeof tar.pack>['entry']>[0]

/** A .tar.gz made entry by entry with tar-stream, exactly as given (nothing normalised). */
async function craft (entries: Array<Header & { body?: string | Buffer }>): Promise<Buffer> {
  const pack = tar.pack()
  const chunks: Buffer[] = []
  const done = (async () => { for await (const c of pack) chunks.push(c as Buffer) })()
  for (const { body, ...header } of entries) {
    await new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null): void => { if (err) reject(err); else resolve() }
      if (body === undefined) pack.entry(header, cb)
      else pack.entry(header, typeof body === 'string' ? Buffer.from(body) : body, cb)
    })
  }
  pack.finalize()
  await done
  return zlib.gzipSync(Buffer.concat(chunks))
}

interface Setup {
  /** Parent of the target: where an escaping entry would land. */
  outside: string
  target: string
  dest: string
}

async function setup (t: Parameters<typeof tempDir>[0]): Promise<Setup> {
  const base = await tempDir(t, 'cp-unsafe-')
  const outside = path.join(base, 'outside')
  const target = path.join(base, 'restore-here')
  const dest = path.join(base, 'dest')
  await mkdir(outside)
  await mkdir(dest)
  return { outside, target, dest }
}

/** Stores the archive in a local destination and restores it into `target` as the agent would. */
async function restoreArchive (s: Setup, archive: Buffer, options: { replaceExisting?: boolean } = {}): Promise<{ result: unknown, error: unknown, ctx: RestoreContext }> {
  const key = `crafted/${randomUUID()}.tar.gz`
  await mkdir(path.dirname(path.join(s.dest, key)), { recursive: true })
  await writeFile(path.join(s.dest, key), archive)
  const job: RestoreJob = {
    kind: 'restore',
    jobId: randomUUID(),
    backupId: randomUUID(),
    serverId: randomUUID(),
    backup: { type: 'files', compression: 'gzip', encrypted: false, sha256: createHash('sha256').update(archive).digest('hex'), sizeBytes: archive.length, engine: null, databases: [] },
    archive: { localPath: null, objectKey: key, destination: { id: randomUUID(), type: 'local', config: { path: s.dest }, credentials: {} } },
    database: null,
    targetPath: s.target,
    replaceExisting: options.replaceExisting ?? false,
    timeoutSeconds: 600,
    createdAt: new Date().toISOString(),
  }
  const ctx: RestoreContext = {
    signal: new AbortController().signal,
    log: pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' }),
    spoolDir: path.join(s.dest, '..', 'spool'),
    onProgress () {},
    openDestination: async (d) => await openDestination(d),
    written: nothingWritten(),
  }
  try {
    return { result: await createRunRestore()(job, ctx), error: null, ctx }
  } catch (error) {
    return { result: null, error, ctx }
  }
}

function isUnsafe (t: Pick<typeof tap, 'ok' | 'equal'>, error: unknown, name: string): void {
  t.ok(error instanceof CloudPilotError, `${name}: a registry error`)
  t.equal((error as CloudPilotError).code, 'UNSAFE_ARCHIVE_ENTRY', `${name}: ${(error as Error)?.message}`)
}
const tap = t

t.test('an entry with ".." is refused and nothing lands outside the target', async (t) => {
  const s = await setup(t)
  const archive = await craft([
    { name: 'ok.txt', body: 'inside\n' },
    { name: '../outside/evil.txt', body: 'escaped\n' },
    { name: 'sub/../../outside/evil2.txt', body: 'escaped\n' },
  ])
  const { error, ctx } = await restoreArchive(s, archive)
  isUnsafe(t, error, '..')
  t.match((error as Error).message, '"../outside/evil.txt"')
  t.same(await readdir(s.outside), [], 'nothing written outside')
  t.equal(await readFile(path.join(s.target, 'ok.txt'), 'utf8'), 'inside\n', 'entries before it were written inside the target')
  t.equal(ctx.written.path, s.target, 'the failure can say the target path may be partially written')
})

t.test('an absolute entry is refused, not written at its absolute path nor under the target', async (t) => {
  const s = await setup(t)
  const evil = path.join(s.outside, 'absolute.txt')
  const { error } = await restoreArchive(s, await craft([{ name: evil, body: 'escaped\n' }]))
  isUnsafe(t, error, 'absolute')
  t.match((error as Error).message, 'absolute path')
  t.notOk(existsSync(evil), 'not written at the absolute path')
  t.notOk(existsSync(path.join(s.target, evil)), 'not written under the target either')
})

t.test('a symlink followed by an entry beneath it is refused: the write never goes through the link', async (t) => {
  const s = await setup(t)
  for (const [link, linkname] of [['escape', '../outside'], ['abs', '__OUTSIDE__'], ['deep/up', '../../outside']] as const) {
    const target = linkname === '__OUTSIDE__' ? s.outside : linkname
    const archive = await craft([
      { name: link, type: 'symlink', linkname: target },
      { name: `${link}/evil.txt`, body: 'escaped\n' },
    ])
    const { error } = await restoreArchive({ ...s, target: path.join(s.target, link.replace('/', '_')) }, archive)
    isUnsafe(t, error, `symlink ${link} -> ${target}`)
    t.match((error as Error).message, 'symbolic link')
  }
  t.same(await readdir(s.outside), [], 'nothing written outside')
})

t.test('a directory entry over a symlink from the archive is refused', async (t) => {
  const s = await setup(t)
  const { error } = await restoreArchive(s, await craft([
    { name: 'l', type: 'symlink', linkname: s.outside },
    { name: 'l/', type: 'directory' },
    { name: 'l/evil.txt', body: 'escaped\n' },
  ]))
  isUnsafe(t, error, 'directory over symlink')
  t.same(await readdir(s.outside), [])
})

t.test('a symlink already in the target is never followed, also with replaceExisting', async (t) => {
  const s = await setup(t)
  await mkdir(s.target)
  await symlink(s.outside, path.join(s.target, 'sub'))
  const victim = path.join(s.outside, 'victim.txt')
  await writeFile(victim, 'untouched\n')
  await symlink(victim, path.join(s.target, 'file-link'))
  const { error } = await restoreArchive(s, await craft([
    { name: 'file-link', body: 'replaces the link, not its target\n' },
    { name: 'sub/evil.txt', body: 'escaped\n' },
  ]), { replaceExisting: true })
  isUnsafe(t, error, 'pre-existing symlinked directory')
  t.equal(await readFile(victim, 'utf8'), 'untouched\n', 'the file a symlink in the target pointed at was not written through')
  t.ok((await lstat(path.join(s.target, 'file-link'))).isFile(), 'the symlink in the way was replaced by the restored file')
  t.same((await readdir(s.outside)).sort(), ['victim.txt'])
})

t.test('hard links may only point at files restored from the archive', async (t) => {
  const s = await setup(t)
  const secret = path.join(s.outside, 'secret.txt')
  await writeFile(secret, 'secret\n')
  const cases: Array<[string, string]> = [
    ['absolute target', secret],
    ['".." target', '../outside/secret.txt'],
    ['target not in the archive', 'never-restored.txt'],
  ]
  for (const [what, linkname] of cases) {
    const sub = path.join(s.target, what.replace(/\W+/g, '_'))
    const { error } = await restoreArchive({ ...s, target: sub }, await craft([{ name: 'hl', type: 'link', linkname }]))
    isUnsafe(t, error, `hard link, ${what}`)
    t.notOk(existsSync(path.join(sub, 'hl')), `${what}: no link created`)
  }
  t.equal((await stat(secret)).nlink, 1, 'no new link to the outside file')
})

t.test('a well-formed archive restores modes, mtimes, symlinks, hard links and empty directories', async (t) => {
  const s = await setup(t)
  const mtime = new Date('2024-02-29T12:34:56Z')
  const dirTime = new Date('2023-01-02T03:04:05Z')
  const { result, error } = await restoreArchive(s, await craft([
    { name: 'var/www/site/', type: 'directory', mode: 0o750, mtime: dirTime },
    { name: 'var/www/site/index.php', body: '<?php echo 1;\n', mode: 0o640, mtime },
    { name: 'var/www/site/run.sh', body: '#!/bin/sh\n', mode: 0o755, mtime },
    { name: 'var/www/site/current', type: 'symlink', linkname: 'index.php', mtime },
    { name: 'var/www/site/dangling', type: 'symlink', linkname: '/nonexistent/elsewhere' },
    { name: 'var/www/site/same-inode', type: 'link', linkname: 'var/www/site/index.php' },
    { name: 'var/www/site/empty/', type: 'directory', mode: 0o700 },
    { name: 'var/www/site/résumé ✓.txt', body: 'unicode\n' },
    { name: 'var/www/site/pipe', type: 'fifo' },
  ]))
  t.equal(error, null, String(error))
  t.match(result, { files: { files: 3, directories: 2, symlinks: 2, hardlinks: 1, skipped: 1 } })
  const site = path.join(s.target, 'var/www/site')
  t.equal((await stat(path.join(site, 'index.php'))).mode & 0o7777, 0o640)
  t.equal((await stat(path.join(site, 'run.sh'))).mode & 0o7777, 0o755)
  t.equal((await stat(path.join(site, 'index.php'))).mtime.toISOString(), mtime.toISOString())
  t.equal((await stat(site)).mode & 0o7777, 0o750, 'directory mode applied at the end')
  t.equal((await stat(site)).mtime.toISOString(), dirTime.toISOString(), 'directory mtime survives the files written into it')
  t.equal(await readlink(path.join(site, 'current')), 'index.php')
  t.equal((await lstat(path.join(site, 'current'))).mtime.toISOString(), mtime.toISOString(), 'symlink mtime')
  t.equal(await readlink(path.join(site, 'dangling')), '/nonexistent/elsewhere', 'symlinks are stored, never followed, whatever they point at')
  t.equal((await stat(path.join(site, 'same-inode'))).ino, (await stat(path.join(site, 'index.php'))).ino, 'hard link to a restored file')
  t.ok((await stat(path.join(site, 'empty'))).isDirectory())
  t.equal(await readFile(path.join(site, 'résumé ✓.txt'), 'utf8'), 'unicode\n')
  t.notOk(existsSync(path.join(site, 'pipe')), 'FIFOs are skipped')
})

t.test('a non-empty target needs replaceExisting (TARGET_NOT_EMPTY, nothing written)', async (t) => {
  const s = await setup(t)
  await mkdir(s.target)
  await writeFile(path.join(s.target, 'existing.txt'), 'old\n')
  const archive = await craft([{ name: 'existing.txt', body: 'new\n' }, { name: 'added.txt', body: 'added\n' }])
  const refused = await restoreArchive(s, archive)
  t.equal((refused.error as CloudPilotError).code, 'TARGET_NOT_EMPTY')
  t.equal(refused.ctx.written.path, null, 'nothing written')
  t.equal(await readFile(path.join(s.target, 'existing.txt'), 'utf8'), 'old\n')
  t.notOk(existsSync(path.join(s.target, 'added.txt')))
  const replaced = await restoreArchive(s, archive, { replaceExisting: true })
  t.equal(replaced.error, null, String(replaced.error))
  t.equal(await readFile(path.join(s.target, 'existing.txt'), 'utf8'), 'new\n')
  t.equal(await readFile(path.join(s.target, 'added.txt'), 'utf8'), 'added\n')
})

t.test('an archive that is not the recorded one is refused before anything is written (CHECKSUM_MISMATCH)', async (t) => {
  const s = await setup(t)
  const good = await craft([{ name: 'a.txt', body: 'a\n' }])
  const key = 'k.tar.gz'
  await writeFile(path.join(s.dest, key), await craft([{ name: 'a.txt', body: 'tampered\n' }]))
  const job: RestoreJob = {
    kind: 'restore', jobId: randomUUID(), backupId: randomUUID(), serverId: randomUUID(),
    backup: { type: 'files', compression: 'gzip', encrypted: false, sha256: createHash('sha256').update(good).digest('hex'), sizeBytes: good.length, engine: null, databases: [] },
    archive: { localPath: null, objectKey: key, destination: { id: randomUUID(), type: 'local', config: { path: s.dest }, credentials: {} } },
    database: null, targetPath: s.target, replaceExisting: false, timeoutSeconds: 60, createdAt: new Date().toISOString(),
  }
  const written = nothingWritten()
  const err = await createRunRestore()(job, {
    signal: new AbortController().signal, log: pino({ level: 'silent' }), spoolDir: path.join(s.dest, 'spool'),
    onProgress () {}, openDestination: async (d) => await openDestination(d), written,
  }).catch((e: unknown) => e)
  t.equal((err as CloudPilotError).code, 'CHECKSUM_MISMATCH')
  t.match((err as Error).message, /nothing was written/)
  t.notOk(existsSync(s.target), 'the target was not even created')
  t.equal(written.path, null)
})
