import { execFile, spawn } from 'node:child_process'
import { randomBytes, randomUUID } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import path from 'node:path'
import pino from 'pino'
import type { BackupJob, DatabaseSource, FilesSource, OffsiteStatus } from '@cloudpilot/protocol'
import { archiveExtension, backupObjectKey } from '@cloudpilot/protocol'
import { openDestination } from '@cloudpilot/storage'
import type { BackupContext } from '../../src/backup/backup-context.ts'
import type { Test as TapTest } from 'tap'

type Test = Pick<TapTest, 'teardown'>

/** Connection defaults of the project's machines (shared/TESTING.md). */
export const PG = { host: '127.0.0.1', port: 5432, username: 'postgres' } as const
export const MY = { host: '127.0.0.1', port: 3306, username: 'root' } as const

export function rand (): string {
  return randomBytes(5).toString('hex')
}

export async function tempDir (t: Test, prefix = 'cp-test-'): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), prefix))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  return dir
}

/** Runs a program (argument array, no shell) and resolves its stdout; rejects with stderr on failure. */
export function run (file: string, args: string[], options: { input?: string | Buffer, env?: NodeJS.ProcessEnv, maxBuffer?: number } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(file, args, { env: options.env ?? process.env, maxBuffer: options.maxBuffer ?? 256 * 1024 * 1024, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err !== null) reject(new Error(`${file} ${args.join(' ')} failed: ${err.message}\n${stderr}`))
      else resolve(stdout)
    })
    if (options.input !== undefined) child.stdin?.end(options.input)
  })
}

/** `sh -c` is used only for test-side restore pipes of fixed commands; names travel as positional args. */
export function shell (script: string, args: string[] = []): Promise<string> {
  return run('/bin/sh', ['-c', script, 'sh', ...args])
}

export function portOpen (port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ port, host })
    socket.once('connect', () => { socket.destroy(); resolve(true) })
    socket.once('error', () => { resolve(false) })
  })
}

/**
 * `skip` option for tests that need a service: false when it listens, a reason to skip on a developer machine
 * when it does not; under CI=true a missing service throws (the test file fails, never a silent skip).
 */
export async function serviceSkip (name: string, port: number): Promise<string | false> {
  if (await portOpen(port)) return false
  const message = `${name} is not listening on 127.0.0.1:${port} (see shared/TESTING.md)`
  if (process.env.CI === 'true') throw new Error(message)
  return message
}

// --- PostgreSQL through the real psql ------------------------------------------------------------------------

export function pgConninfoFor (database: string): string {
  const q = (v: string): string => `'${v.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`
  return `host=${q(PG.host)} port=${q(String(PG.port))} user=${q(PG.username)} dbname=${q(database)}`
}

export function pgIdent (name: string): string {
  return `"${name.replace(/"/g, '""')}"`
}

export async function psql (database: string, sql: string): Promise<string> {
  return await run('psql', ['-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1', `--dbname=${pgConninfoFor(database)}`], { input: sql })
}

/** Creates a database with a random (or given) name and drops it in teardown. */
export async function createPgDatabase (t: Test, name = `cp_test_${rand()}`): Promise<string> {
  t.teardown(async () => { await dropPgDatabase(name) })
  await psql('postgres', `CREATE DATABASE ${pgIdent(name)};`)
  return name
}

export async function dropPgDatabase (name: string): Promise<void> {
  await psql('postgres', `DROP DATABASE IF EXISTS ${pgIdent(name)} WITH (FORCE);`).catch(() => {})
}

/** A role with a password, dropped in teardown. */
export async function createPgRole (t: Test, password: string, grants: string[] = []): Promise<string> {
  const role = `cp_role_${rand()}`
  t.teardown(async () => { await psql('postgres', `DROP ROLE IF EXISTS ${role};`).catch(() => {}) })
  await psql('postgres', `CREATE ROLE ${role} LOGIN PASSWORD '${password.replace(/'/g, "''")}';${grants.map((g) => `GRANT ${g} TO ${role};`).join('')}`)
  return role
}

// --- MariaDB through the real mysql client --------------------------------------------------------------------

export function myIdent (name: string): string {
  return '`' + name.replace(/`/g, '``') + '`'
}

export async function mysql (sql: string, database?: string): Promise<string> {
  const args = ['--no-defaults', `--host=${MY.host}`, `--port=${MY.port}`, `--user=${MY.username}`, '--batch', '--skip-column-names', '--default-character-set=utf8mb4']
  if (database !== undefined) args.push(`--database=${database}`)
  return await run('mysql', args, { input: sql })
}

export async function createMyDatabase (t: Test, name = `cp_test_${rand()}`): Promise<string> {
  t.teardown(async () => { await mysql(`DROP DATABASE IF EXISTS ${myIdent(name)};`).catch(() => {}) })
  await mysql(`CREATE DATABASE ${myIdent(name)} CHARACTER SET utf8mb4;`)
  return name
}

export async function createMyUser (t: Test, password: string, grantOn: string[]): Promise<string> {
  const user = `cp_user_${rand()}`
  const pw = password.replace(/\\/g, '\\\\').replace(/'/g, "\\'")
  t.teardown(async () => { await mysql(`DROP USER IF EXISTS '${user}'@'%', '${user}'@'localhost';`).catch(() => {}) })
  await mysql(`CREATE USER '${user}'@'%' IDENTIFIED BY '${pw}'; CREATE USER '${user}'@'localhost' IDENTIFIED BY '${pw}';` +
    grantOn.map((db) => `GRANT SELECT, SHOW VIEW, TRIGGER, LOCK TABLES, EVENT ON ${myIdent(db)}.* TO '${user}'@'%'; GRANT SELECT, SHOW VIEW, TRIGGER, LOCK TABLES, EVENT ON ${myIdent(db)}.* TO '${user}'@'localhost';`).join('') +
    // Without it MariaDB < 11.3 dump tools silently leave stored routines out (SHOW CREATE FUNCTION is refused).
    `GRANT SELECT ON mysql.proc TO '${user}'@'%'; GRANT SELECT ON mysql.proc TO '${user}'@'localhost';`)
  return user
}

// --- Jobs and contexts -----------------------------------------------------------------------------------------

export function databaseJob (source: DatabaseSource, overrides: Partial<BackupJob> = {}): BackupJob {
  return baseJob('database', source, overrides)
}

export function filesJob (source: FilesSource, overrides: Partial<BackupJob> = {}): BackupJob {
  return baseJob('files', source, overrides)
}

function baseJob (type: 'database' | 'files', source: DatabaseSource | FilesSource, overrides: Partial<BackupJob>): BackupJob {
  const jobId = randomUUID()
  const serverId = randomUUID()
  const planId = randomUUID()
  const createdAt = new Date()
  const compression = overrides.compression ?? 'gzip'
  return {
    kind: 'backup',
    jobId,
    planId,
    serverId,
    type,
    source,
    compression,
    encryption: null,
    keepLocal: false,
    destination: null,
    objectKey: backupObjectKey({ serverId, planId, backupId: jobId, createdAt, extension: archiveExtension(type, compression, false) }),
    timeoutSeconds: 3600,
    createdAt: createdAt.toISOString(),
    ...overrides,
  }
}

export function localDestination (dir: string): BackupJob['destination'] {
  return { id: randomUUID(), type: 'local', config: { path: dir }, credentials: {} }
}

export interface TestContext extends BackupContext {
  progress: Array<{ bytes: number, bytesPerSecond: number, phase?: string }>
  offsite: OffsiteStatus[]
  controller: AbortController
}

export async function backupContext (t: Test, options: { signal?: AbortSignal } = {}): Promise<TestContext> {
  const controller = new AbortController()
  const spoolDir = path.join(await tempDir(t, 'cp-spool-'), 'spool')
  const ctx: TestContext = {
    signal: options.signal ?? controller.signal,
    controller,
    log: pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' }),
    spoolDir,
    progress: [],
    offsite: [],
    onProgress (p) { ctx.progress.push(p) },
    onOffsiteStatus (s) { ctx.offsite.push(s) },
    openDestination: async (d) => await openDestination(d),
  }
  return ctx
}

/** Decompresses a .gz/.zst file to a string with the stock CLI tools. */
export async function decompress (file: string): Promise<string> {
  if (file.endsWith('.zst')) return await run('zstd', ['-dc', file])
  if (file.endsWith('.gz')) return await run('gzip', ['-dc', file])
  return await run('cat', [file])
}

/** Is a process (or any member of its group) still alive? */
export async function groupAlive (pgid: number): Promise<boolean> {
  const { readdir, readFile } = await import('node:fs/promises')
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = await readFile(`/proc/${entry}/stat`, 'utf8')
      // fields after the ")" : state ppid pgrp ...
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      if (Number(rest[2]) === pgid && rest[0] !== 'Z') return true
    } catch {}
  }
  return false
}

export { spawn }

// --- A private PostgreSQL with password (scram) authentication ---------------------------------------------------
// The shared server trusts every loopback connection, so a wrong password would still get in: tests of password
// handling start their own short-lived cluster (initdb ~1 s) as the postgres user, on a free loopback port.

export interface PrivatePostgres {
  port: number
  /** Socket directory (trust for the postgres user, used for setup). */
  socketDir: string
  /** Runs SQL as postgres over the socket. */
  sql (sql: string, database?: string): Promise<string>
}

async function freePort (): Promise<number> {
  const { createServer } = await import('node:net')
  return await new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      server.close(() => { resolve(typeof address === 'object' && address !== null ? address.port : 0) })
    })
  })
}

/** false when a private cluster can be started (PostgreSQL server binaries, root), else the reason to skip. */
export async function privatePostgresSkip (): Promise<string | false> {
  const { readdir } = await import('node:fs/promises')
  const versions = await readdir('/usr/lib/postgresql').catch(() => [] as string[])
  let reason: string | false = false
  if (versions.length === 0) reason = 'PostgreSQL server binaries (/usr/lib/postgresql/*/bin) are not installed'
  else if (process.getuid?.() !== 0) reason = 'starting a private PostgreSQL needs root (to run it as the postgres user)'
  if (reason !== false && process.env.CI === 'true') throw new Error(reason)
  return reason
}

export async function startPrivatePostgres (t: Test): Promise<PrivatePostgres> {
  const { readdir, chown, writeFile: write } = await import('node:fs/promises')
  const versions = (await readdir('/usr/lib/postgresql')).sort((a, b) => Number(b) - Number(a))
  const bin = `/usr/lib/postgresql/${versions[0] ?? '15'}/bin`
  const uid = Number((await run('id', ['-u', 'postgres'])).trim())
  const gid = Number((await run('id', ['-g', 'postgres'])).trim())
  const dir = await mkdtemp(path.join(tmpdir(), 'cp-pg-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  await chown(dir, uid, gid)
  const data = path.join(dir, 'data')
  const asPostgres = (file: string, args: string[]): Promise<string> => new Promise((resolve, reject) => {
    execFile(file, args, { uid, gid, cwd: dir, env: { PATH: process.env.PATH ?? '', LC_ALL: 'C' } }, (err, stdout, stderr) => {
      if (err !== null) reject(new Error(`${file} failed: ${err.message}\n${stderr}`))
      else resolve(stdout)
    })
  })
  await asPostgres(`${bin}/initdb`, ['-D', data, '-U', 'postgres', '-E', 'UTF8', '--locale=C', '--auth-local=trust', '--auth-host=scram-sha-256', '--no-sync'])
  await write(path.join(data, 'pg_hba.conf'), 'local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n')
  const port = await freePort()
  const server = spawn(`${bin}/postgres`, ['-D', data, '-p', String(port), '-k', dir, '-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off', '-c', 'logging_collector=off'], {
    uid, gid, cwd: dir, stdio: 'ignore', env: { PATH: process.env.PATH ?? '', LC_ALL: 'C' },
  })
  const exited = new Promise<void>((resolve) => { server.once('exit', () => { resolve() }) })
  t.teardown(async () => {
    server.kill('SIGINT')
    await exited
  })
  const sql = async (text: string, database = 'postgres'): Promise<string> =>
    await run('psql', ['-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1', '-h', dir, '-p', String(port), '-U', 'postgres', '-d', database], { input: text })
  for (let i = 0; ; i++) {
    try {
      await sql('SELECT 1')
      break
    } catch (err) {
      if (i > 100) throw err
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
  }
  return { port, socketDir: dir, sql }
}

/** Every regular file under a directory (relative paths, sorted); the local driver may leave empty key folders. */
export async function filesUnder (dir: string): Promise<string[]> {
  const { readdir } = await import('node:fs/promises')
  const entries = await readdir(dir, { recursive: true, withFileTypes: true })
  return entries.filter((e) => !e.isDirectory()).map((e) => path.relative(dir, path.join(e.parentPath, e.name))).sort()
}
