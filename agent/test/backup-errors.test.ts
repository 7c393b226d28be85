import t from 'tap'
import { chmod, mkdir, readdir, symlink, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { createServer } from 'node:net'
import { createRunBackup } from '../src/backup/run-backup.ts'
import {
  MY, PG, backupContext, createMyDatabase, createMyUser, createPgDatabase, databaseJob, filesJob, localDestination,
  filesUnder, privatePostgresSkip, rand, serviceSkip, startPrivatePostgres, tempDir,
} from './helpers/backup-fixtures.ts'

const pgSkip = await serviceSkip('PostgreSQL', PG.port)
const mySkip = await serviceSkip('MariaDB', MY.port)
const privateSkip = await privatePostgresSkip()
const runBackup = createRunBackup()

/** A loopback port with nothing listening. */
async function closedPort (): Promise<number> {
  return await new Promise((resolve) => {
    const server = createServer()
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      server.close(() => { resolve(typeof address === 'object' && address !== null ? address.port : 1) })
    })
  })
}

t.test('PostgreSQL passwords: right one dumps, wrong or missing one is ACCESS_DENIED without the password in the message', { skip: pgSkip || privateSkip }, async (t) => {
  const pg = await startPrivatePostgres(t)
  const password = `right:pw\\with'quotes ${rand()}`
  await pg.sql(`CREATE ROLE backup LOGIN PASSWORD '${password.replace(/'/g, "''")}'; CREATE DATABASE shop; GRANT pg_read_all_data TO backup;`)
  await pg.sql('CREATE TABLE t (x int); INSERT INTO t VALUES (1);', 'shop')
  const source = { engine: 'postgresql' as const, host: '127.0.0.1', port: pg.port, username: 'backup', databases: ['shop'] }

  const ok = await runBackup(databaseJob({ ...source, password }, { keepLocal: true }), await backupContext(t))
  t.ok(ok.sizeBytes > 0, 'the password from the 0600 PGPASSFILE (with : and \\ escaped) authenticates')

  const wrong = `wrong-${rand()}`
  const err = await runBackup(databaseJob({ ...source, password: wrong }, { keepLocal: true }), await backupContext(t)).catch((e: unknown) => e)
  t.match(err, { code: 'ACCESS_DENIED', message: /password authentication failed/ })
  t.match((err as { hint: string }).hint, /CONNECT.*SELECT|pg_read_all_data/)
  t.notMatch((err as Error).message, wrong, 'the password is not in the message')

  await t.rejects(runBackup(databaseJob(source, { keepLocal: true }), await backupContext(t)), { code: 'ACCESS_DENIED', message: /no password supplied/ })
})

t.test('MySQL wrong password is ACCESS_DENIED naming the grants', { skip: mySkip }, async (t) => {
  const db = await createMyDatabase(t)
  const user = await createMyUser(t, 'the-right-password', [db])
  const wrong = `wrong-${rand()}`
  const err = await runBackup(databaseJob({ engine: 'mysql', host: MY.host, port: MY.port, username: user, password: wrong, databases: [db] }, { keepLocal: true }), await backupContext(t)).catch((e: unknown) => e)
  t.match(err, { code: 'ACCESS_DENIED', message: /Access denied for user/ })
  t.match((err as { hint: string }).hint, /SELECT, SHOW VIEW, TRIGGER, LOCK TABLES and EVENT/)
  t.notMatch((err as Error).message, wrong)
})

t.test('MySQL user without access to the database is ACCESS_DENIED', { skip: mySkip }, async (t) => {
  const db = await createMyDatabase(t)
  const other = await createMyDatabase(t)
  const user = await createMyUser(t, 'pw-123456', [other])
  await t.rejects(runBackup(databaseJob({ engine: 'mysql', host: MY.host, port: MY.port, username: user, password: 'pw-123456', databases: [db] }, { keepLocal: true }), await backupContext(t)),
    { code: 'ACCESS_DENIED' })
})

t.test('a closed port is SOURCE_UNREACHABLE for both engines', { skip: pgSkip || mySkip }, async (t) => {
  const port = await closedPort()
  await t.rejects(runBackup(databaseJob({ engine: 'postgresql', host: '127.0.0.1', port, username: 'postgres', databases: ['x'] }, { keepLocal: true }), await backupContext(t)),
    { code: 'SOURCE_UNREACHABLE', message: /Connection refused/i })
  await t.rejects(runBackup(databaseJob({ engine: 'mysql', host: '127.0.0.1', port, username: 'root', databases: ['x'] }, { keepLocal: true }), await backupContext(t)),
    { code: 'SOURCE_UNREACHABLE', message: /Can't connect/i })
})

t.test('a missing database is SOURCE_NOT_FOUND for both engines, and nothing is left behind', { skip: pgSkip || mySkip }, async (t) => {
  const dest = await tempDir(t)
  const missing = `cp_missing_${rand()}`
  const pgCtx = await backupContext(t)
  await t.rejects(runBackup(databaseJob({ engine: 'postgresql', ...PG, databases: [missing] }, { keepLocal: true, destination: localDestination(dest) }), pgCtx),
    { code: 'SOURCE_NOT_FOUND', message: new RegExp(missing) })
  t.same(pgCtx.offsite, ['uploading', 'failed'])
  t.same(await filesUnder(dest), [], 'no object, no part file')
  t.same(await readdir(pgCtx.spoolDir), [], 'no spool file')

  // One good and one missing database: the whole backup fails.
  const good = await createPgDatabase(t)
  await t.rejects(runBackup(databaseJob({ engine: 'postgresql', ...PG, databases: [good, missing] }, { keepLocal: true }), await backupContext(t)),
    { code: 'SOURCE_NOT_FOUND' })

  await t.rejects(runBackup(databaseJob({ engine: 'mysql', host: MY.host, port: MY.port, username: MY.username, databases: [missing] }, { keepLocal: true }), await backupContext(t)),
    { code: 'SOURCE_NOT_FOUND', message: /Unknown database/ })
})

t.test('a missing dump tool is CLIENT_MISSING naming the Debian package', async (t) => {
  const emptyPath = await tempDir(t)
  const withoutTools = createRunBackup({ path: emptyPath })
  await t.rejects(withoutTools(databaseJob({ engine: 'postgresql', ...PG, databases: ['x'] }, { keepLocal: true }), await backupContext(t)),
    { code: 'CLIENT_MISSING', message: /pg_dump/, hint: /apt-get install postgresql-client/ })
  await t.rejects(withoutTools(databaseJob({ engine: 'mysql', host: MY.host, port: MY.port, databases: ['x'] }, { keepLocal: true }), await backupContext(t)),
    { code: 'CLIENT_MISSING', message: /mysqldump/, hint: /apt-get install mariadb-client/ })
})

/** A PATH with a fake pg_dump that behaves as the script says (plus a normal `--version`). */
async function fakePgDump (t: Parameters<typeof tempDir>[0], body: string): Promise<string> {
  const dir = await tempDir(t)
  await writeFile(path.join(dir, 'pg_dump'), `#!/bin/sh\nif [ "$1" = "--version" ]; then echo "pg_dump (PostgreSQL) 15.99"; exit 0; fi\n${body}\n`)
  await chmod(path.join(dir, 'pg_dump'), 0o755)
  return dir
}

t.test('a dump is never reported good when the tool failed, even after bytes flowed', async (t) => {
  const source = { engine: 'postgresql' as const, ...PG, databases: ['db'] }
  const cases: Array<[string, string, RegExp]> = [
    ['non-zero exit after output', 'echo "CREATE TABLE t (x int);"; echo "pg_dump: error: query failed: server closed the connection" >&2; exit 1', /exited with code 1 while dumping database "db": pg_dump: error: query failed/],
    ['killed by a signal', 'echo "CREATE TABLE t (x int);"; kill -9 $$', /killed by SIGKILL/],
    ['error on stderr with exit 0', 'echo "SELECT 1;"; echo "-- PostgreSQL database dump complete"; echo "pg_dump: error: something went wrong" >&2; exit 0', /something went wrong/],
    ['truncated (no completion marker)', 'echo "CREATE TABLE t (x int);"; exit 0', /incomplete/],
    ['empty output', 'exit 0', /empty dump/],
  ]
  for (const [name, body, message] of cases) {
    const dir = await fakePgDump(t, body)
    const dest = await tempDir(t)
    const ctx = await backupContext(t)
    await t.rejects(createRunBackup({ path: `${dir}:/usr/bin:/bin` })(databaseJob(source, { keepLocal: true, destination: localDestination(dest) }), ctx),
      { code: 'DUMP_FAILED', message }, name)
    t.same(await filesUnder(dest), [], `${name}: nothing published`)
    t.same(await readdir(ctx.spoolDir), [], `${name}: no spool file`)
  }
  // Warnings alone are fine.
  const dir = await fakePgDump(t, 'echo "pg_dump: warning: there are circular foreign-key constraints" >&2; echo "SELECT 1;"; echo "-- PostgreSQL database dump complete"')
  const ok = await createRunBackup({ path: `${dir}:/usr/bin:/bin` })(databaseJob(source, { keepLocal: true }), await backupContext(t))
  t.ok(ok.sizeBytes > 0, 'a warning on stderr does not fail the dump')
})

t.test('a failing destination is UPLOAD_FAILED carrying the driver\'s code and message; the spool part file is removed', async (t) => {
  const src = await tempDir(t)
  await writeFile(path.join(src, 'f'), 'data')
  const missingDir = path.join(await tempDir(t), 'not-there')
  const ctx = await backupContext(t)
  const err = await runBackup(filesJob({ paths: [src] }, { keepLocal: true, destination: localDestination(missingDir) }), ctx).catch((e: unknown) => e)
  t.match(err, { code: 'UPLOAD_FAILED', message: /CONTAINER_NOT_FOUND: directory .*not-there does not exist/ })
  t.same(ctx.offsite, ['uploading', 'failed'])
  t.same(await readdir(ctx.spoolDir), [], 'no partial or final spool file')
})

t.test('a full spool disk is NO_SPACE and nothing is published', async (t) => {
  const src = await tempDir(t)
  await writeFile(path.join(src, 'f'), Buffer.alloc(4 * 1024 * 1024, 7))
  const dest = await tempDir(t)
  const ctx = await backupContext(t)
  const job = filesJob({ paths: [src] }, { keepLocal: true, destination: localDestination(dest), compression: 'none' })
  // The spool part file is /dev/full: every write fails with ENOSPC.
  await mkdir(ctx.spoolDir, { recursive: true, mode: 0o700 })
  await symlink('/dev/full', path.join(ctx.spoolDir, `${job.jobId}.tar.part`))
  await t.rejects(runBackup(job, ctx), { code: 'NO_SPACE', message: /No space left/ })
  t.same(await filesUnder(dest), [], 'upload aborted, nothing under the key')
  t.same(await readdir(ctx.spoolDir), [])
})

t.test('a failing compressor (pigz) fails the backup with DUMP_FAILED and publishes nothing', async (t) => {
  const src = await tempDir(t)
  await writeFile(path.join(src, 'f'), Buffer.alloc(2 * 1024 * 1024, 1))
  for (const [name, body] of [
    ['exits 1 after reading', 'cat > /dev/null; echo "pigz: abort: write error on <stdout>" >&2; exit 1'],
    ['exits at once without reading', 'echo "pigz: abort: internal threads error" >&2; exit 1'],
  ] as const) {
    const dir = await tempDir(t)
    await writeFile(path.join(dir, 'pigz'), `#!/bin/sh\nif [ "$1" = "--version" ]; then echo "pigz 2.6"; exit 0; fi\n${body}\n`)
    await chmod(path.join(dir, 'pigz'), 0o755)
    const dest = await tempDir(t)
    const ctx = await backupContext(t)
    await t.rejects(createRunBackup({ path: `${dir}:/usr/bin:/bin` })(filesJob({ paths: [src] }, { keepLocal: true, destination: localDestination(dest) }), ctx),
      { code: 'DUMP_FAILED', message: /pigz exited with code 1: pigz: abort/ }, name)
    t.same(await filesUnder(dest), [], `${name}: nothing published`)
    t.same(await readdir(ctx.spoolDir), [], `${name}: no spool file`)
  }
})

t.test('a compressor that exits 0 without reading all its input is still a failure', async (t) => {
  const src = await tempDir(t)
  await writeFile(path.join(src, 'f'), Buffer.alloc(8 * 1024 * 1024, 1))
  const dir = await tempDir(t)
  await writeFile(path.join(dir, 'pigz'), '#!/bin/sh\nif [ "$1" = "--version" ]; then echo "pigz 2.6"; exit 0; fi\nhead -c 1000 > /dev/null; exec 0<&-; sleep 0.5; exit 0\n')
  await chmod(path.join(dir, 'pigz'), 0o755)
  const ctx = await backupContext(t)
  await t.rejects(createRunBackup({ path: `${dir}:/usr/bin:/bin` })(filesJob({ paths: [src] }, { keepLocal: true }), ctx),
    { code: 'DUMP_FAILED', message: /pigz stopped reading its input/ })
  t.same(await readdir(ctx.spoolDir), [])
})
