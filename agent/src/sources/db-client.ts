import { execFile } from 'node:child_process'
import { CloudPilotError, SECOND, type DatabaseConnection, type DatabaseEngine } from '@cloudpilot/protocol'
import type { SourceOptions } from './archive-source.ts'
import { spawnTool, toolEnvironment, type SpawnToolOptions, type ToolProcess } from './child-process.ts'
import { clientMissing, mapClientFailure, mapSpawnError, stderrHasError, type ClientPurpose } from './error-mapping.ts'
import { pgConninfo } from './postgres-dump.ts'
import { mysqlOptionFile, pgPassFile, writeSecretFile, type SecretFile } from './secret-file.ts'
import { findTool } from './tool-detect.ts'

/** Largest output of a query the agent keeps (database lists, existence checks). */
const MAX_QUERY_OUTPUT = 16 * 1024 * 1024
/** Database a PostgreSQL client connects to for server-level statements. */
export const PG_MAINTENANCE_DATABASE = 'postgres'

/**
 * A database server through its stock client (psql / mariadb|mysql), for restores and discovery. Scripts go to
 * the client's stdin; names reach SQL only as psql variables (`:'name'` literal, `:"name"` identifier, escaped by
 * psql itself) or, for MySQL, as hex literals and backtick-quoted identifiers built here; the password only
 * through a 0600 PGPASSFILE / --defaults-extra-file, removed by dispose().
 */
export interface DbClient {
  readonly engine: DatabaseEngine
  readonly tool: string
  /** Runs `script` (stdin) against `database` (default: the server, no database); returns stdout. */
  query (script: string, options?: { database?: string, vars?: Record<string, string>, subject?: string, zeroSeparated?: boolean, signal?: AbortSignal }): Promise<string>
  /** Starts the client reading SQL from stdin into `database` (a restore); check it with `check`. */
  spawnRestore (database: string): ToolProcess
  /** Awaits a started client and throws the mapped error when it failed. */
  check (proc: ToolProcess, subject: string): Promise<void>
  dispose (): Promise<void>
}

export async function openDbClient (connection: DatabaseConnection, options: SourceOptions & { purpose: ClientPurpose }): Promise<DbClient> {
  return connection.engine === 'postgresql' ? await openPsql(connection, options) : await openMysqlClient(connection, options)
}

/** A MySQL identifier in backticks (backticks doubled). */
export function mysqlIdent (name: string): string {
  return '`' + name.replace(/`/g, '``') + '`'
}

/** A MySQL string literal for any bytes: hex, converted to utf8mb4 (no escaping rules to get wrong). */
export function mysqlText (value: string): string {
  return `CONVERT(X'${Buffer.from(value, 'utf8').toString('hex')}' USING utf8mb4)`
}

function spawnOptions (env: NodeJS.ProcessEnv, options: SourceOptions, stdin: boolean, signal: AbortSignal = options.signal): SpawnToolOptions {
  const out: SpawnToolOptions = { env, signal }
  if (stdin) out.stdin = 'pipe'
  if (options.onSpawn !== undefined) out.onSpawn = options.onSpawn
  if (options.registry !== undefined) out.registry = options.registry
  return out
}

interface ClientBase {
  engine: DatabaseEngine
  tool: string
  file: string
  env: NodeJS.ProcessEnv
  secret: SecretFile | null
  connection: DatabaseConnection
  options: SourceOptions & { purpose: ClientPurpose }
}

function makeClient (base: ClientBase, queryArgs: (opts: { database?: string, vars?: Record<string, string>, zeroSeparated?: boolean }) => string[], restoreArgs: (database: string) => string[]): DbClient {
  const { engine, tool, file, env, options } = base
  const secrets = [base.connection.password]
  const check = async (proc: ToolProcess, subject: string, signal: AbortSignal = options.signal): Promise<void> => {
    const exit = await proc.exited
    if (exit.spawnError !== null) throw mapSpawnError(exit.spawnError, tool, engine)
    signal.throwIfAborted()
    const stderr = proc.stderrTail()
    if (exit.code !== 0 || exit.signal !== null || stderrHasError(stderr)) {
      throw mapClientFailure({ engine, tool, stderr, code: exit.code, signal: exit.signal, secrets, subject, purpose: options.purpose })
    }
  }
  return {
    engine,
    tool,
    async query (script, opts = {}) {
      // `opts.signal` replaces the job's signal for clean-up that must run after the job was aborted.
      const proc = spawnTool(file, queryArgs(opts), spawnOptions(env, options, true, opts.signal))
      proc.stdin?.on('error', () => { /* the exit status says why */ })
      proc.stdin?.end(script)
      const chunks: Buffer[] = []
      let size = 0
      for await (const chunk of proc.stdout) {
        size += (chunk as Buffer).length
        if (size > MAX_QUERY_OUTPUT) { await proc.terminate(); throw new CloudPilotError('INTERNAL', `${tool} answered more than ${MAX_QUERY_OUTPUT} bytes`) }
        chunks.push(chunk as Buffer)
      }
      await check(proc, opts.subject ?? 'querying the database server', opts.signal)
      return Buffer.concat(chunks).toString('utf8')
    },
    spawnRestore (database) {
      const proc = spawnTool(file, restoreArgs(database), spawnOptions(env, options, true))
      proc.stdout.resume()
      return proc
    },
    check,
    async dispose () { await base.secret?.remove() },
  }
}

async function openPsql (connection: DatabaseConnection, options: SourceOptions & { purpose: ClientPurpose }): Promise<DbClient> {
  const file = await findTool('psql', options.path)
  if (file === null) throw clientMissing('psql', 'postgresql')
  let secret: SecretFile | null = null
  if (connection.password !== undefined) {
    const content = pgPassFile(connection.username === undefined ? { password: connection.password } : { username: connection.username, password: connection.password })
    secret = await writeSecretFile('pgpass', content, options.secretDir === undefined ? {} : { dir: options.secretDir })
  }
  const env = toolEnvironment(secret === null ? {} : { PGPASSFILE: secret.path }, options.path)
  const common = ['-X', '-q', '--no-password', '-v', 'ON_ERROR_STOP=1']
  return makeClient({ engine: 'postgresql', tool: 'psql', file, env, secret, connection, options },
    (opts) => [
      ...common, '-A', '-t',
      ...(opts.zeroSeparated === true ? ['--field-separator-zero', '--record-separator-zero'] : []),
      ...Object.entries(opts.vars ?? {}).flatMap(([k, v]) => ['-v', `${k}=${v}`]),
      `--dbname=${pgConninfo(connection, opts.database ?? PG_MAINTENANCE_DATABASE)}`,
    ],
    // One transaction: a failing restore leaves the (new) database empty rather than half filled.
    (database) => [...common, '--single-transaction', '--output=/dev/null', `--dbname=${pgConninfo(connection, database)}`])
}

async function openMysqlClient (connection: DatabaseConnection, options: SourceOptions & { purpose: ClientPurpose }): Promise<DbClient> {
  let tool = 'mariadb'
  let file = await findTool(tool, options.path)
  if (file === null) {
    tool = 'mysql'
    file = await findTool(tool, options.path)
  }
  if (file === null) throw clientMissing('mysql (or mariadb)', 'mysql')
  const sandbox = await supportsSandbox(file)
  const secret = await writeSecretFile('my.cnf', connection.password === undefined ? '[client]\n' : mysqlOptionFile({ password: connection.password }),
    options.secretDir === undefined ? {} : { dir: options.secretDir })
  const env = toolEnvironment({}, options.path)
  // --defaults-extra-file must be the first argument.
  const common = [`--defaults-extra-file=${secret.path}`]
  if (connection.socket !== undefined) common.push(`--socket=${connection.socket}`)
  else if (connection.host !== undefined) common.push(`--host=${connection.host}`)
  if (connection.port !== undefined && connection.socket === undefined) common.push(`--port=${connection.port}`)
  if (connection.username !== undefined) common.push(`--user=${connection.username}`)
  common.push('--batch', '--skip-column-names', '--default-character-set=utf8mb4', '--connect-timeout=15')
  // The sandbox refuses client commands that touch the file system or run programs (\! and friends) whatever the
  // dump contains (MariaDB >= 10.5.25 / 10.11.8); mariadb-dump also switches it on in the dump's first line.
  if (sandbox) common.push('--sandbox')
  return makeClient({ engine: 'mysql', tool, file, env, secret, connection, options },
    (opts) => [...common, ...(opts.database === undefined ? [] : [`--database=${opts.database}`])],
    (database) => [...common, `--database=${database}`])
}

const sandboxSupport = new Map<string, Promise<boolean>>()

/** Does this mysql/mariadb client know --sandbox? (cached per executable) */
function supportsSandbox (file: string): Promise<boolean> {
  let known = sandboxSupport.get(file)
  if (known === undefined) {
    known = new Promise<boolean>((resolve) => {
      execFile(file, ['--help'], { timeout: 5 * SECOND, env: { PATH: process.env.PATH ?? '', LC_ALL: 'C' }, maxBuffer: 1024 * 1024 }, (_err, stdout) => {
        resolve(/^\s*--sandbox\b/m.test(String(stdout)))
      })
    })
    sandboxSupport.set(file, known)
  }
  return known
}
