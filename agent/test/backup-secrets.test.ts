import t from 'tap'
import { readFileSync, statSync } from 'node:fs'
import { stat } from 'node:fs/promises'
import path from 'node:path'
import { createRunBackup } from '../src/backup/run-backup.ts'
import {
  MY, PG, backupContext, createMyDatabase, createMyUser, databaseJob, mysql, privatePostgresSkip, rand, serviceSkip,
  startPrivatePostgres,
} from './helpers/backup-fixtures.ts'

const pgSkip = await serviceSkip('PostgreSQL', PG.port)
const mySkip = await serviceSkip('MariaDB', MY.port)
const privateSkip = await privatePostgresSkip()

interface Seen { file: string, cmdline: string, environ: string, secretFile: string | null, secretMode: number | null, secretDirMode: number | null, secretContent: string | null }

/**
 * Reads /proc/<pid>/cmdline and environ of each dump process the moment it runs (libuv returns from spawn only
 * after exec; under stdbuf we wait for its exec of the tool), and the secret file it uses.
 */
function spy (seen: Seen[]): (info: { pid: number, file: string }) => void {
  // A tool refused at once (wrong login) may be gone before everything is read: what was read still counts.
  const readOr = (file: string): string => { try { return readFileSync(file, 'utf8') } catch { return '' } }
  return ({ pid, file }) => {
    // The tool may run under `stdbuf`, which execs it (same pid): wait for that exec (a few ms at most).
    let cmdline = readOr(`/proc/${pid}/cmdline`)
    const deadline = Date.now() + 5000
    // (On Debian /usr/bin/pg_dump is pg_wrapper, which execs /usr/lib/postgresql/<v>/bin/pg_dump: compare base names.)
    const tool = path.basename(file)
    while (cmdline !== '' && path.basename(cmdline.split('\0')[0] ?? '') !== tool && Date.now() < deadline) cmdline = readOr(`/proc/${pid}/cmdline`) || cmdline
    const environ = readOr(`/proc/${pid}/environ`)
    const secretFile = /(?:^|\0)PGPASSFILE=([^\0]+)/.exec(environ)?.[1] ?? /--defaults-extra-file=([^\0]+)/.exec(cmdline)?.[1] ?? null
    let secretMode = null
    let secretDirMode = null
    let secretContent = null
    if (secretFile !== null) {
      try {
        secretMode = statSync(secretFile).mode & 0o777
        secretDirMode = statSync(path.dirname(secretFile)).mode & 0o777
        secretContent = readFileSync(secretFile, 'utf8')
      } catch { /* already removed after a refused login */ }
    }
    seen.push({ file, cmdline, environ, secretFile, secretMode, secretDirMode, secretContent })
  }
}

t.test('the PostgreSQL password is in neither argv nor the environment of pg_dump, only in a 0600 PGPASSFILE removed after', { skip: pgSkip || privateSkip }, async (t) => {
  const pg = await startPrivatePostgres(t)
  const password = `s3cret-${rand()}:with\\colon`
  await pg.sql(`CREATE ROLE backup LOGIN PASSWORD '${password}'; CREATE DATABASE shop; GRANT pg_read_all_data TO backup;`)
  await pg.sql('CREATE TABLE t AS SELECT g FROM generate_series(1, 100000) g;', 'shop')
  const seen: Seen[] = []
  const runBackup = createRunBackup({ onSpawn: spy(seen), pigz: false })
  const result = await runBackup(databaseJob({ engine: 'postgresql', host: '127.0.0.1', port: pg.port, username: 'backup', password, databases: ['shop'] }, { keepLocal: true }), await backupContext(t))
  t.ok(result.sizeBytes > 0)

  const dump = seen.find((s) => s.file.endsWith('/pg_dump'))
  if (dump === undefined) throw new Error('pg_dump was not spawned')
  t.match(dump.cmdline, /^\/\S*pg_dump\0/, 'read the live pg_dump process')
  t.match(dump.cmdline, /--dbname=host='127\.0\.0\.1' port='\d+' user='backup' dbname='shop'/)
  t.notMatch(dump.cmdline, password, 'password not in /proc/<pid>/cmdline')
  t.notMatch(dump.environ, password, 'password not in /proc/<pid>/environ')
  t.notMatch(dump.environ, /PGPASSWORD/)
  t.equal(dump.secretMode, 0o600, 'PGPASSFILE is 0600')
  t.equal(dump.secretDirMode, 0o700, 'in a private 0700 directory')
  t.equal(dump.secretContent, `*:*:*:backup:${password.replace(/\\/g, '\\\\').replace(/:/g, '\\:')}\n`)
  await t.rejects(stat(dump.secretFile as string), { code: 'ENOENT' }, 'removed after the backup')
  await t.rejects(stat(path.dirname(dump.secretFile as string)), { code: 'ENOENT' }, 'its directory too')
})

t.test('the MySQL password is in neither argv nor the environment of the dump tool, only in a 0600 option file removed after', { skip: mySkip }, async (t) => {
  const db = await createMyDatabase(t)
  // Enough rows that the dump tool is still running when its /proc entries are read (as for pg_dump above).
  await mysql('CREATE TABLE t (x INT); INSERT INTO t SELECT seq FROM seq_1_to_100000;', db)
  const password = `s3cret-${rand()}"#'\\`
  const user = await createMyUser(t, password, [db])
  const seen: Seen[] = []
  const runBackup = createRunBackup({ onSpawn: spy(seen), pigz: false })
  await runBackup(databaseJob({ engine: 'mysql', host: MY.host, port: MY.port, username: user, password, databases: [db] }, { keepLocal: true }), await backupContext(t))

  const dump = seen.find((s) => /\/(mariadb-dump|mysqldump)$/.test(s.file))
  if (dump === undefined) throw new Error('the dump tool was not spawned')
  t.match(dump.cmdline, /^[^\0]*(mariadb-dump|mysqldump)\0--defaults-extra-file=/, 'option file is the first argument')
  t.match(dump.cmdline, new RegExp(`\0--\0${db}\0$`), 'database name after --')
  t.notMatch(dump.cmdline, password)
  t.notMatch(dump.environ, password)
  t.notMatch(dump.environ, /MYSQL_PWD/)
  t.equal(dump.secretMode, 0o600)
  t.equal(dump.secretDirMode, 0o700)
  t.match(dump.secretContent, /^\[client\]\npassword="/)
  await t.rejects(stat(dump.secretFile as string), { code: 'ENOENT' }, 'removed after the backup')
})

t.test('the secret file is removed after a failed backup too', { skip: mySkip }, async (t) => {
  const seen: Seen[] = []
  const runBackup = createRunBackup({ onSpawn: spy(seen), pigz: false })
  await t.rejects(runBackup(databaseJob({ engine: 'mysql', host: MY.host, port: MY.port, username: 'nobody_here', password: 'whatever-123', databases: ['x'] }, { keepLocal: true }), await backupContext(t)),
    { code: 'ACCESS_DENIED' })
  const dump = seen[0]
  t.ok(dump?.secretFile)
  await t.rejects(stat(dump?.secretFile as string), { code: 'ENOENT' })
})
