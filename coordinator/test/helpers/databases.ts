import { randomBytes } from 'node:crypto'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import type { Test } from 'tap'

const exec = promisify(execFile)

export const PG = { host: '127.0.0.1', port: 5432, user: 'postgres' }
export const MYSQL = { host: '127.0.0.1', port: 3306, user: 'root' }

/** Runs SQL with psql against a database (trust auth on loopback). */
export async function psql (database: string, sql: string): Promise<string> {
  const { stdout } = await exec('psql', ['-h', PG.host, '-p', String(PG.port), '-U', PG.user, '-d', database, '-v', 'ON_ERROR_STOP=1', '-X', '-q', '-t', '-A', '-c', sql], { maxBuffer: 64 * 1024 * 1024 })
  return stdout.trim()
}

/** Runs SQL with the mysql client as root. */
export async function mysql (sql: string, database?: string): Promise<string> {
  const args = ['-h', MYSQL.host, '-P', String(MYSQL.port), '-u', MYSQL.user, '-N', '-B', '-e', sql]
  if (database !== undefined) args.push('--', database)
  const { stdout } = await exec('mysql', args, { maxBuffer: 64 * 1024 * 1024 })
  return stdout.trim()
}

export function randomName (prefix: string): string {
  return `${prefix}_${randomBytes(5).toString('hex')}`
}

/** A fresh PostgreSQL database for one test, dropped in teardown. Fails (never skips) under CI when PostgreSQL is absent. */
export async function tempPostgresDatabase (t: Test, prefix = 'cp_test'): Promise<{ name: string, url: string }> {
  const name = randomName(prefix)
  await psql('postgres', `create database "${name}"`)
  t.teardown(async () => { await psql('postgres', `drop database if exists "${name}" with (force)`) })
  return { name, url: `postgres://${PG.user}@${PG.host}:${PG.port}/${name}` }
}

export async function tempMysqlDatabase (t: Test, prefix = 'cp_test'): Promise<{ name: string }> {
  const name = randomName(prefix)
  await mysql(`create database \`${name}\``)
  t.teardown(async () => { await mysql(`drop database if exists \`${name}\``) })
  return { name }
}
