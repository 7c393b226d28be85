import { once } from 'node:events'
import { randomBytes } from 'node:crypto'
import { CloudPilotError, type RestoreJob } from '@cloudpilot/protocol'
import type { SourceOptions } from '../sources/archive-source.ts'
import type { ToolProcess } from '../sources/child-process.ts'
import { mysqlIdent, mysqlText, openDbClient, type DbClient } from '../sources/db-client.ts'
import type { RestoredDatabase, WrittenTargets } from './restore-context.ts'

/** Bytes queued for the restore client before the feeder waits for it (bounded memory, overlapped work). */
const STDIN_BUFFER = 1024 * 1024

/** One database of the backup and the name it is restored under. */
export interface DatabasePlan {
  source: string
  target: string
}

/**
 * Which databases a restore writes: one of a multi-database backup (`sourceDatabase`), the only one under a new
 * name (`targetDatabase`), or all of them under their own names.
 */
export function planDatabases (job: RestoreJob): DatabasePlan[] {
  const spec = job.database
  if (spec === null) return []
  const all = job.backup.databases
  if (all.length === 0) throw new CloudPilotError('VALIDATION_FAILED', 'The backup records no database names, so its databases cannot be restored.')
  if (spec.sourceDatabase !== null) {
    if (!all.includes(spec.sourceDatabase)) {
      throw new CloudPilotError('VALIDATION_FAILED', `The backup holds no database ${JSON.stringify(spec.sourceDatabase)}; it holds ${all.map((d) => JSON.stringify(d)).join(', ')}.`)
    }
    return [{ source: spec.sourceDatabase, target: spec.targetDatabase ?? spec.sourceDatabase }]
  }
  if (spec.targetDatabase !== null) {
    const only = all[0]
    if (all.length !== 1 || only === undefined) {
      throw new CloudPilotError('VALIDATION_FAILED', `The backup holds ${all.length} databases: name the one to restore as ${JSON.stringify(spec.targetDatabase)} with sourceDatabase.`)
    }
    return [{ source: only, target: spec.targetDatabase }]
  }
  return all.map((d) => ({ source: d, target: d }))
}

/** A restore client writing one database: feed it the dump, then end it. */
export interface DatabaseStream {
  write (chunk: Buffer): Promise<void>
  /** Ends the input and waits for the client; throws the mapped error when it failed. */
  end (): Promise<void>
}

/**
 * The target database server of a restore. `preflight` checks everything that can be checked before a byte is
 * written (client installed, server reachable, login, existing databases, CREATEDB/ownership on PostgreSQL);
 * `begin` creates one target database and starts the client that loads it.
 *
 * Replacing an existing PostgreSQL database never drops it before the new copy is complete: the dump is loaded
 * into a staging database, and only when psql succeeded is the old database dropped and the staging one renamed
 * to its name. A restore that fails or is cancelled drops the staging database and leaves the old one as it was.
 * (MySQL/MariaDB cannot rename a database: there the existing one is dropped first, and a failure says so.)
 */
export class DatabaseRestorer {
  readonly #client: DbClient
  readonly #plan: DatabasePlan[]
  readonly #replace: boolean
  readonly #written: WrittenTargets
  readonly #existing = new Set<string>()
  readonly #restored: RestoredDatabase[] = []
  /** Staging databases (PostgreSQL replace) not yet renamed to their target: dropped by dispose(). */
  readonly #staging = new Set<string>()
  #pgForceDrop = true
  readonly #signal: AbortSignal | undefined

  private constructor (client: DbClient, plan: DatabasePlan[], replace: boolean, written: WrittenTargets, signal: AbortSignal | undefined) {
    this.#client = client
    this.#plan = plan
    this.#replace = replace
    this.#written = written
    this.#signal = signal
  }

  static async open (job: RestoreJob, plan: DatabasePlan[], written: WrittenTargets, options: SourceOptions): Promise<DatabaseRestorer> {
    if (job.database === null) throw new Error('no database target')
    const client = await openDbClient(job.database.connection, { ...options, purpose: 'restore' })
    return new DatabaseRestorer(client, plan, job.replaceExisting, written, options.signal)
  }

  get restored (): RestoredDatabase[] {
    return [...this.#restored]
  }

  get engine (): 'mysql' | 'postgresql' {
    return this.#client.engine
  }

  async preflight (): Promise<void> {
    const targets = this.#plan.map((p) => p.target)
    if (new Set(targets).size !== targets.length) throw new CloudPilotError('VALIDATION_FAILED', 'Two databases would be restored under the same name.')
    if (this.#client.engine === 'postgresql') await this.#preflightPostgres(targets)
    else await this.#preflightMysql(targets)
  }

  /** One psql run: the user's CREATEDB/superuser, the server version, and which targets exist (and are its own). */
  async #preflightPostgres (targets: string[]): Promise<void> {
    const vars = Object.fromEntries(targets.map((t, i) => [`t${i}`, t]))
    const out = await this.#client.query([
      'SELECT (r.rolcreatedb OR r.rolsuper)::int, current_setting(\'server_version_num\') FROM pg_roles r WHERE r.rolname = current_user;',
      `SELECT d.datname, pg_has_role(current_user, d.datdba, 'MEMBER')::int FROM pg_database d WHERE d.datname IN (${targets.map((_, i) => `:'t${i}'`).join(', ')});`,
    ].join('\n'), { vars, zeroSeparated: true, subject: 'checking the target server and databases' })
    const fields = out.split('\0')
    const [canCreate, version] = fields
    this.#pgForceDrop = Number(version) >= 130000
    const owned = new Map<string, boolean>()
    for (let i = 2; i + 1 < fields.length; i += 2) owned.set(fields[i] as string, fields[i + 1] === '1')
    for (const target of targets) {
      const own = owned.get(target)
      if (own === undefined) continue
      if (!this.#replace) throw databaseExists(target)
      if (!own) throw new CloudPilotError('INSUFFICIENT_PRIVILEGES', `The restore user may not drop the existing database ${JSON.stringify(target)} (it must own it); nothing was written.`)
      this.#existing.add(target)
    }
    if (canCreate !== '1') {
      throw new CloudPilotError('INSUFFICIENT_PRIVILEGES', 'The restore user may not create databases (it has neither CREATEDB nor superuser); nothing was written.', { hint: 'ALTER ROLE <user> CREATEDB; or restore as a superuser (give the connection in the request).' })
    }
  }

  async #preflightMysql (targets: string[]): Promise<void> {
    const out = await this.#client.query(`SELECT HEX(SCHEMA_NAME) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME IN (${targets.map(mysqlText).join(', ')});`,
      { subject: 'checking the target databases' })
    const existing = new Set(out.split('\n').map((l) => l.trim()).filter((l) => l !== '').map((hex) => Buffer.from(hex, 'hex').toString('utf8')))
    for (const target of targets) {
      if (!existing.has(target)) continue
      if (!this.#replace) throw databaseExists(target)
      this.#existing.add(target)
    }
  }

  /**
   * Creates the target of `plan` and starts loading it. Replacing on PostgreSQL loads a staging database that
   * takes the target's place when the load succeeded; on MySQL the existing database is dropped first.
   */
  async begin (plan: DatabasePlan): Promise<DatabaseStream> {
    const { target } = plan
    const replaced = this.#existing.has(target)
    const pg = this.#client.engine === 'postgresql'
    if (replaced && pg) return await this.#beginStaged(plan)
    if (replaced) {
      // From here on the previous content may be gone: a failure must say so.
      this.#written.databases.push(target)
      this.#written.replaced.push(target)
      await this.#client.query(pg ? `DROP DATABASE IF EXISTS :"target"${this.#pgForceDrop ? ' WITH (FORCE)' : ''};\n` : `DROP DATABASE IF EXISTS ${mysqlIdent(target)};\n`,
        { vars: { target }, subject: `dropping the existing database ${JSON.stringify(target)}` })
    }
    // Named before CREATE DATABASE is sent: a cancel during it may still leave the new database behind. When the
    // server refused it (no privilege, bad name), nothing was created and the name is taken back.
    if (!replaced) this.#written.databases.push(target)
    try {
      await this.#client.query(pg ? 'CREATE DATABASE :"target" TEMPLATE template0;\n' : `CREATE DATABASE ${mysqlIdent(target)};\n`,
        { vars: { target }, subject: `creating the target database ${JSON.stringify(target)}` })
    } catch (err) {
      if (!replaced && this.#signal?.aborted !== true) this.#written.databases.splice(this.#written.databases.indexOf(target), 1)
      throw err
    }
    return this.#load(plan.source, target, async () => {
      this.#restored.push({ source: plan.source, target, replaced })
    })
  }

  /** PostgreSQL replace: load `cp_restore_<random>`, then drop the target and rename the staging database. */
  async #beginStaged (plan: DatabasePlan): Promise<DatabaseStream> {
    const { target } = plan
    const staging = `cp_restore_${randomBytes(6).toString('hex')}`
    this.#staging.add(staging)
    await this.#client.query('CREATE DATABASE :"staging" TEMPLATE template0;\n',
      { vars: { staging }, subject: `creating the staging database ${JSON.stringify(staging)} for ${JSON.stringify(target)}` })
    return this.#load(plan.source, staging, async () => {
      await this.#client.query(`DROP DATABASE IF EXISTS :"target"${this.#pgForceDrop ? ' WITH (FORCE)' : ''};\n`,
        { vars: { target }, subject: `dropping the existing database ${JSON.stringify(target)} to put the restored copy in its place` })
      // The previous content is gone from here on; the complete restored copy is in `staging` until renamed.
      this.#written.databases.push(target)
      this.#written.replaced.push(target)
      this.#staging.delete(staging)
      try {
        await this.#client.query('ALTER DATABASE :"staging" RENAME TO :"target";\n',
          { vars: { staging, target }, subject: `renaming the restored copy ${JSON.stringify(staging)} to ${JSON.stringify(target)}` })
      } catch (err) {
        const cause = err instanceof Error ? err.message : String(err)
        throw new CloudPilotError('RESTORE_FAILED', `The restored copy of ${JSON.stringify(target)} is complete in database ${JSON.stringify(staging)} but could not be renamed: ${cause}`,
          { hint: `ALTER DATABASE "${staging}" RENAME TO "${target.replace(/"/g, '""')}"; as a user that owns it.` })
      }
      this.#restored.push({ source: plan.source, target, replaced: true })
    })
  }

  /** Starts the client loading `database`; `done` runs once the client finished without error. */
  #load (source: string, database: string, done: () => Promise<void>): DatabaseStream {
    const proc = this.#client.spawnRestore(database)
    const subject = `restoring database ${JSON.stringify(source)} into ${JSON.stringify(database)}`
    const stdin = proc.stdin
    if (stdin === null) throw new Error('restore client stdin not piped')
    stdin.on('error', () => { /* EPIPE: the client stopped; its exit status says why */ })
    const client = this.#client
    return {
      write: async (chunk) => {
        if (proc.finished || stdin.destroyed) await stopped(client, proc, subject)
        // Keep up to STDIN_BUFFER queued for the client so the decompressor keeps working while it parses.
        stdin.write(chunk)
        if (stdin.writableLength > STDIN_BUFFER) await drainOrExit(stdin, proc)
      },
      end: async () => {
        stdin.end()
        await client.check(proc, subject)
        await done()
      },
    }
  }

  /**
   * Drops staging databases a failed or cancelled restore left (the target they were to replace is untouched),
   * then removes the client's secret file. Runs after the job's signal may have fired: it uses its own deadline.
   */
  async dispose (): Promise<void> {
    try {
      for (const staging of this.#staging) {
        await this.#client.query(`DROP DATABASE IF EXISTS :"staging"${this.#pgForceDrop ? ' WITH (FORCE)' : ''};\n`,
          { vars: { staging }, subject: `dropping the staging database ${JSON.stringify(staging)}`, signal: AbortSignal.timeout(60_000) })
        this.#staging.delete(staging)
      }
    } finally {
      await this.#client.dispose()
    }
  }
}

function databaseExists (target: string): CloudPilotError {
  return new CloudPilotError('DATABASE_EXISTS', `The target database ${JSON.stringify(target)} already exists; nothing was written.`, { hint: 'Turn on replace (replaceExisting: true) to drop and recreate it, or pick a new name (targetDatabase).' })
}

/** The client went away while input was still coming: its own error, or that it stopped reading. */
async function stopped (client: DbClient, proc: ToolProcess, subject: string): Promise<never> {
  await client.check(proc, subject)
  throw new CloudPilotError('RESTORE_FAILED', `${client.tool} stopped reading the dump while ${subject}.`)
}

async function drainOrExit (stdin: NonNullable<ToolProcess['stdin']>, proc: ToolProcess): Promise<void> {
  const ac = new AbortController()
  try {
    await Promise.race([once(stdin, 'drain', { signal: ac.signal }), once(stdin, 'close', { signal: ac.signal }), proc.exited])
  } catch {
    // 'error' on stdin: handled by the exit status
  } finally {
    ac.abort()
  }
}
