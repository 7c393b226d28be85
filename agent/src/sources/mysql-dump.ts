import { Readable } from 'node:stream'
import type { DatabaseSource } from '@cloudpilot/protocol'
import type { ArchiveSource, SourceOptions } from './archive-source.ts'
import { toolEnvironment } from './child-process.ts'
import { dumpProcessOutput } from './dump-process.ts'
import { clientMissing } from './error-mapping.ts'
import { mysqlOptionFile, writeSecretFile } from './secret-file.ts'
import { findTool, toolVersion } from './tool-detect.ts'

/** mysqldump/mariadb-dump end every complete dump with this comment (followed by the date). */
export const MYSQL_DUMP_COMPLETE = '-- Dump completed'

/** Options of every MySQL/MariaDB dump: consistent (InnoDB) without global locks, streamed row by row. */
export const MYSQL_DUMP_OPTIONS = [
  '--single-transaction',
  '--quick',
  '--routines',
  '--triggers',
  '--events',
  '--hex-blob',
  '--no-tablespaces',
  '--default-character-set=utf8mb4',
] as const

/**
 * The argument vector of a dump: the option file first (mysqldump reads `--defaults-extra-file` only as the
 * first argument), connection options, then `--` and the database names, so a name like `--file=/tmp/x` is a
 * name and never an option (checked with mariadb-dump 10.19 / MariaDB 10.11: my_getopt stops at `--`).
 */
export function mysqlDumpArgs (source: Pick<DatabaseSource, 'host' | 'port' | 'username' | 'socket' | 'databases'>, optionFile: string): string[] {
  const args = [`--defaults-extra-file=${optionFile}`, ...MYSQL_DUMP_OPTIONS]
  if (source.socket !== undefined) args.push(`--socket=${source.socket}`)
  else if (source.host !== undefined) args.push(`--host=${source.host}`)
  if (source.port !== undefined && source.socket === undefined) args.push(`--port=${source.port}`)
  if (source.username !== undefined) args.push(`--user=${source.username}`)
  if (source.databases.length > 1) args.push('--databases')
  args.push('--', ...source.databases)
  return args
}

/**
 * MySQL/MariaDB source: mariadb-dump when installed (else mysqldump). One database is a plain dump without
 * CREATE DATABASE/USE (restore with `mysql newname < file`); several are `--databases a b` (they create and
 * USE each). The password reaches the tool only through a 0600 `--defaults-extra-file`.
 */
export async function openMysqlDump (source: DatabaseSource, options: SourceOptions): Promise<ArchiveSource> {
  let tool = 'mariadb-dump'
  let file = await findTool(tool, options.path)
  if (file === null) {
    tool = 'mysqldump'
    file = await findTool(tool, options.path)
  }
  if (file === null) throw clientMissing('mysqldump (or mariadb-dump)', 'mysql')
  const version = await toolVersion(tool, options.path) ?? 'unknown'
  const stdbuf = options.stdbuf === false ? null : await findTool('stdbuf', options.path)
  const secret = await writeSecretFile('my.cnf', source.password === undefined ? '[client]\n' : mysqlOptionFile({ password: source.password }),
    options.secretDir === undefined ? {} : { dir: options.secretDir })
  const env = toolEnvironment({}, options.path)
  const subject = source.databases.length === 1 ? `database ${JSON.stringify(source.databases[0])}` : `databases ${source.databases.map((d) => JSON.stringify(d)).join(', ')}`
  const generate = dumpProcessOutput({
    engine: 'mysql',
    tool,
    file,
    args: mysqlDumpArgs(source, secret.path),
    env,
    signal: options.signal,
    ...(options.onSpawn === undefined ? {} : { onSpawn: options.onSpawn }),
    ...(options.registry === undefined ? {} : { registry: options.registry }),
    stdbuf,
    completionMarker: MYSQL_DUMP_COMPLETE,
    subject,
    secrets: [source.password],
  })
  return {
    readable: Readable.from(generate, { objectMode: false, highWaterMark: 256 * 1024 }),
    tools: { [tool]: version },
    dispose: async () => { await secret.remove() },
  }
}
