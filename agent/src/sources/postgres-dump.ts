import { Readable } from 'node:stream'
import { CloudPilotError, type DatabaseSource } from '@cloudpilot/protocol'
import type { ArchiveSource, SourceOptions } from './archive-source.ts'
import { toolEnvironment } from './child-process.ts'
import { dumpProcessOutput } from './dump-process.ts'
import { clientMissing } from './error-mapping.ts'
import { pgPassFile, writeSecretFile, type SecretFile } from './secret-file.ts'
import { findTool, toolVersion } from './tool-detect.ts'

/** pg_dump ends every complete plain dump with this comment. */
export const PG_DUMP_COMPLETE = '-- PostgreSQL database dump complete'

/** Seconds libpq waits for a connection before giving up (SOURCE_UNREACHABLE). */
const CONNECT_TIMEOUT_SECONDS = 15

/**
 * A conninfo value in single quotes with `\` and `'` escaped, as libpq parses it: whatever the value holds
 * (spaces, `=`, quotes), it stays one value of one keyword.
 */
export function conninfoValue (value: string): string {
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, '\\\'')}'`
}

/** The libpq connection string for one database of the source; every value quoted. No password in it. */
export function pgConninfo (source: Pick<DatabaseSource, 'host' | 'port' | 'username' | 'socket'>, database: string): string {
  const parts: Array<[string, string]> = []
  const host = source.socket ?? source.host
  if (host !== undefined) parts.push(['host', host])
  if (source.port !== undefined) parts.push(['port', String(source.port)])
  if (source.username !== undefined) parts.push(['user', source.username])
  parts.push(['dbname', database])
  parts.push(['application_name', 'cloudpilot-backup'])
  parts.push(['connect_timeout', String(CONNECT_TIMEOUT_SECONDS)])
  return parts.map(([k, v]) => `${k}=${conninfoValue(v)}`).join(' ')
}

/** A SQL identifier in double quotes (`"` doubled), e.g. for CREATE DATABASE. */
export function quoteIdent (name: string): string {
  return `"${name.replace(/"/g, '""')}"`
}

/**
 * The psql `\connect` line for a database, as pg_dumpall writes it: a name that is not plain ASCII goes in a
 * conninfo (`dbname='…'`, so `host=evil dbname=x` stays a name) inside a double-quoted psql argument, preceded
 * by `\encoding SQL_ASCII` so psql passes the name's bytes unchanged.
 */
export function psqlConnect (database: string): string {
  if (/^[A-Za-z0-9_.]+$/.test(database)) return `\\connect ${quoteIdent(database)}\n`
  return `\\encoding SQL_ASCII\n\\connect -reuse-previous=on ${quoteIdent(`dbname=${conninfoValue(database)}`)}\n`
}

/** Header of a multi-database script, restorable with `psql -d postgres -f file`. */
export function multiDatabaseHeader (databases: readonly string[]): string {
  return [
    '--',
    `-- CloudPilot Backup: PostgreSQL databases ${databases.map((d) => JSON.stringify(d)).join(', ')}`,
    '-- Restore all of them with: psql -d postgres -f <this file>  (the databases must not exist yet)',
    '--',
    '',
    '\\set ON_ERROR_STOP on',
    '',
  ].join('\n') + '\n'
}

/** The lines before one database's dump in a multi-database script. */
export function databaseSection (database: string): string {
  return [
    '',
    `-- cloudpilot:database ${JSON.stringify(database)}`,
    '',
    `CREATE DATABASE ${quoteIdent(database)} WITH TEMPLATE = template0;`,
    '',
  ].join('\n') + '\n' + psqlConnect(database) + '\n'
}

/**
 * PostgreSQL source: one database is a plain `pg_dump` (restore with `createdb x; psql x < file`); several are
 * one psql script that creates and fills each (restore with `psql -d postgres`). The password reaches pg_dump
 * only through a 0600 PGPASSFILE; the database name only inside the quoted conninfo of `--dbname=`.
 */
export async function openPostgresDump (source: DatabaseSource, options: SourceOptions): Promise<ArchiveSource> {
  for (const database of source.databases) {
    if (/[\n\r]/.test(database)) throw new CloudPilotError('UNSUPPORTED', `The database name ${JSON.stringify(database)} contains a line break; pg_dump cannot restore such names in a script.`)
  }
  const pgDump = await findTool('pg_dump', options.path)
  if (pgDump === null) throw clientMissing('pg_dump', 'postgresql')
  const version = await toolVersion('pg_dump', options.path) ?? 'unknown'
  const stdbuf = options.stdbuf === false ? null : await findTool('stdbuf', options.path)

  let secret: SecretFile | null = null
  if (source.password !== undefined) {
    const content = pgPassFile(source.username === undefined ? { password: source.password } : { username: source.username, password: source.password })
    secret = await writeSecretFile('pgpass', content, options.secretDir === undefined ? {} : { dir: options.secretDir })
  }
  const env = toolEnvironment(secret === null ? {} : { PGPASSFILE: secret.path }, options.path)
  const databases = source.databases
  const multi = databases.length > 1

  async function * generate (): AsyncGenerator<Buffer> {
    if (multi) yield Buffer.from(multiDatabaseHeader(databases))
    for (const database of databases) {
      if (multi) yield Buffer.from(databaseSection(database))
      yield * dumpProcessOutput({
        engine: 'postgresql',
        tool: 'pg_dump',
        file: pgDump as string,
        args: ['--format=plain', '--no-owner', '--no-privileges', '--no-password', `--dbname=${pgConninfo(source, database)}`],
        env,
        signal: options.signal,
        ...(options.onSpawn === undefined ? {} : { onSpawn: options.onSpawn }),
    ...(options.registry === undefined ? {} : { registry: options.registry }),
    stdbuf,
        completionMarker: PG_DUMP_COMPLETE,
        subject: `database ${JSON.stringify(database)}`,
        secrets: [source.password],
      })
    }
  }

  return {
    readable: Readable.from(generate(), { objectMode: false, highWaterMark: 256 * 1024 }),
    tools: { pg_dump: version },
    dispose: async () => { await secret?.remove() },
  }
}
