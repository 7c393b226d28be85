import t from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import { chmod, chown, link, lstat, mkdir, readFile, readlink, stat, symlink, utimes, writeFile, readdir } from 'node:fs/promises'
import { createReadStream } from 'node:fs'
import path from 'node:path'
import { createRunBackup } from '../src/backup/run-backup.ts'
import { backupContext, filesJob, localDestination, run, shell, tempDir } from './helpers/backup-fixtures.ts'

const runBackup = createRunBackup()
const MTIME = new Date('2023-05-06T07:08:09Z')
const LONG_SEGMENT = 'long-directory-name-'.repeat(6)

async function sha256File (file: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer)
  return hash.digest('hex')
}

/** A tree with everything tar must keep. Returns the root and the expectations. */
async function makeTree (base: string): Promise<{ root: string, bigSha: string }> {
  const root = path.join(base, 'site')
  await mkdir(path.join(root, 'sub', 'deeper'), { recursive: true })
  await mkdir(path.join(root, 'empty'))
  await mkdir(path.join(root, 'cache', 'x'), { recursive: true })
  await mkdir(path.join(root, 'skipme'))
  await mkdir(path.join(root, LONG_SEGMENT, LONG_SEGMENT), { recursive: true })

  await writeFile(path.join(root, 'a.txt'), 'hello\n')
  await writeFile(path.join(root, 'run.sh'), '#!/bin/sh\necho hi\n')
  await writeFile(path.join(root, 'sub', 'deeper', 'Grüße 日本語 🚀.txt'), 'unicode content ü\n')
  await writeFile(path.join(root, LONG_SEGMENT, LONG_SEGMENT, 'file-with-a-long-path.txt'), 'long path\n')
  await writeFile(path.join(root, 'debug.log'), 'excluded by *.log\n')
  await writeFile(path.join(root, 'sub', 'trace.log'), 'excluded by *.log\n')
  await writeFile(path.join(root, 'cache', 'x', 'c.bin'), 'excluded by cache\n')
  await writeFile(path.join(root, 'skipme', 'secret'), 'excluded by absolute glob\n')
  await writeFile(path.join(root, 'owned'), 'owned by 1234:5678\n')
  await writeFile(path.join(root, 'zero'), '')
  await symlink('a.txt', path.join(root, 'link-to-a'))
  await symlink('/nonexistent/target', path.join(root, 'dangling'))
  await symlink(path.join(root, 'sub'), path.join(root, 'dir-link'))
  await link(path.join(root, 'a.txt'), path.join(root, 'hard-a'))

  // 20 MB, not compressible into nothing: random blocks repeated with a counter.
  const big = path.join(root, 'big.bin')
  const block = randomBytes(1024 * 1024)
  const parts: Buffer[] = []
  for (let i = 0; i < 20; i++) { const b = Buffer.from(block); b.writeUInt32BE(i, 0); parts.push(b) }
  await writeFile(big, Buffer.concat(parts))

  await chmod(path.join(root, 'a.txt'), 0o640)
  await chmod(path.join(root, 'run.sh'), 0o755)
  await chmod(path.join(root, 'empty'), 0o700)
  await chmod(path.join(root, 'sub'), 0o750)
  await chmod(path.join(root, 'owned'), 0o604)
  await chown(path.join(root, 'owned'), 1234, 5678)
  for (const p of ['a.txt', 'run.sh', 'big.bin', 'owned', 'zero', 'sub/deeper/Grüße 日本語 🚀.txt', 'empty', 'sub/deeper', 'sub']) {
    await utimes(path.join(root, p), MTIME, MTIME)
  }
  return { root, bigSha: await sha256File(big) }
}

t.test('a files backup extracts with GNU tar keeping modes, mtimes, owners, links and names', async (t) => {
  const base = await tempDir(t)
  const { root, bigSha } = await makeTree(base)
  const other = path.join(base, 'other-root')
  await mkdir(other)
  await writeFile(path.join(other, 'o.txt'), 'second path\n')

  const dest = await tempDir(t)
  const ctx = await backupContext(t)
  const job = filesJob({
    // root listed twice (once through a nested path): archived once.
    paths: [root, other, path.join(root, 'sub')],
    exclude: ['*.log', 'cache', `${root}/skipme/**`],
  }, { destination: localDestination(dest), keepLocal: true })
  const result = await runBackup(job, ctx)
  t.ok(result.localPath?.endsWith('.tar.gz'))
  const archive = path.join(dest, job.objectKey)

  // The listing: standard tar, no warnings, each entry once.
  const listing = (await run('tar', ['-tzf', archive])).split('\n').filter((l) => l !== '')
  t.equal(new Set(listing).size, listing.length, 'no duplicate entries')
  const rel = root.replace(/^\//, '')
  t.ok(listing.includes(`${rel}/`), 'entry names are the absolute paths without the leading /')
  t.notOk(listing.some((l) => l.startsWith('/')), 'no absolute entry names')

  const out = await tempDir(t)
  t.equal(await shell('tar -xzf "$1" -C "$2" 2>&1', [archive, out]), '', 'GNU tar extracts without a warning')
  const x = (p: string): string => path.join(out, rel, p)

  t.equal(await readFile(x('a.txt'), 'utf8'), 'hello\n')
  t.equal((await stat(x('a.txt'))).mode & 0o7777, 0o640, 'file mode')
  t.equal((await stat(x('run.sh'))).mode & 0o7777, 0o755, 'executable mode')
  t.equal((await stat(x('a.txt'))).mtime.getTime(), MTIME.getTime(), 'file mtime')
  t.equal((await stat(x('sub'))).mode & 0o7777, 0o750, 'directory mode')
  t.equal((await stat(x('sub'))).mtime.getTime(), MTIME.getTime(), 'directory mtime')
  t.ok((await stat(x('empty'))).isDirectory(), 'empty directory kept')
  t.equal((await stat(x('empty'))).mode & 0o7777, 0o700)
  t.same(await readdir(x('empty')), [])
  t.equal(await readFile(x('sub/deeper/Grüße 日本語 🚀.txt'), 'utf8'), 'unicode content ü\n', 'unicode name')
  t.equal(await readFile(x(`${LONG_SEGMENT}/${LONG_SEGMENT}/file-with-a-long-path.txt`), 'utf8'), 'long path\n', 'path longer than 255 bytes')
  t.equal((await readFile(x('zero'))).length, 0)

  const owned = await stat(x('owned'))
  t.same([owned.uid, owned.gid, owned.mode & 0o7777], [1234, 5678, 0o604], 'uid/gid kept')

  t.ok((await lstat(x('link-to-a'))).isSymbolicLink(), 'symlink stored as a symlink')
  t.equal(await readlink(x('link-to-a')), 'a.txt')
  t.equal(await readlink(x('dangling')), '/nonexistent/target', 'dangling symlink kept')
  t.ok((await lstat(x('dir-link'))).isSymbolicLink(), 'symlink to a directory is not followed')
  t.equal((await stat(x('hard-a'))).ino, (await stat(x('a.txt'))).ino, 'hard link restored as a hard link')

  t.equal(await sha256File(x('big.bin')), bigSha, '20 MB file intact')
  t.equal((await stat(x('big.bin'))).mtime.getTime(), MTIME.getTime())

  t.notOk(listing.some((l) => l.endsWith('.log')), '*.log excluded')
  t.notOk(listing.some((l) => l.includes('/cache')), 'cache directory excluded with its contents')
  t.notOk(listing.some((l) => l.includes('skipme/secret')), 'absolute glob excluded')
  t.equal(await readFile(path.join(out, other.replace(/^\//, ''), 'o.txt'), 'utf8'), 'second path\n', 'second path archived')

  t.same(result.manifest.paths, [root, other, path.join(root, 'sub')])
  t.equal(result.manifest.type, 'files')
  t.ok(result.manifest.rawBytes > 20 * 1024 * 1024)
  // The local copy is the same bytes as the uploaded object.
  t.equal(await sha256File(result.localPath as string), await sha256File(archive))
})

t.test('a missing files path fails with SOURCE_NOT_FOUND naming it, before anything is written', async (t) => {
  const base = await tempDir(t)
  const missing = path.join(base, 'does-not-exist')
  const dest = await tempDir(t)
  const ctx = await backupContext(t)
  const job = filesJob({ paths: [base, missing] }, { destination: localDestination(dest), keepLocal: true })
  await t.rejects(runBackup(job, ctx), { code: 'SOURCE_NOT_FOUND', message: new RegExp(missing) })
  t.same(await readdir(dest), [], 'nothing at the destination')
  await t.rejects(readdir(ctx.spoolDir), { code: 'ENOENT' }, 'no spool file')
})

t.test('an unreadable file fails with PERMISSION_DENIED naming the path', { skip: process.getuid?.() === 0 ? false : 'needs root to drop to nobody' }, async (t) => {
  // As root every file is readable: archive as user nobody in a child process.
  const base = await tempDir(t)
  await chmod(base, 0o755)
  const secret = path.join(base, 'secret.key')
  await writeFile(path.join(base, 'open.txt'), 'readable\n')
  await writeFile(secret, 'private\n')
  await chmod(secret, 0o600)
  await chmod(path.join(base, 'open.txt'), 0o644)
  const script = `
    import { openFilesArchive } from ${JSON.stringify(new URL('../src/sources/files-archive.ts', import.meta.url).href)}
    const src = await openFilesArchive({ paths: [${JSON.stringify(base)}] }, { signal: new AbortController().signal })
    try { for await (const _ of src.readable) {} ; console.log(JSON.stringify({ ok: true })) }
    catch (err) { console.log(JSON.stringify({ code: err.code, message: err.message })) }
    finally { await src.dispose() }
  `
  const { spawnSync } = await import('node:child_process')
  const res = spawnSync(process.execPath, ['--input-type=module', '-e', script], { uid: 65534, gid: 65534, encoding: 'utf8', cwd: '/' })
  t.equal(res.status, 0, res.stderr)
  const outcome = JSON.parse(res.stdout.trim().split('\n').at(-1) ?? '{}')
  t.equal(outcome.code, 'PERMISSION_DENIED')
  t.match(outcome.message, secret)
})

t.test('paths that are all excluded fail instead of producing an empty archive', async (t) => {
  const base = await tempDir(t)
  await writeFile(path.join(base, 'a.log'), 'x')
  const ctx = await backupContext(t)
  await t.rejects(runBackup(filesJob({ paths: [path.join(base, 'a.log')], exclude: ['*.log'] }, { keepLocal: true }), ctx), { code: 'SOURCE_NOT_FOUND', message: /Nothing to archive/ })
  t.same(await readdir(ctx.spoolDir), [])
})
