import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { CloudPilotError } from '@cloudpilot/protocol'

/**
 * A credential file for a child process: 0600 inside a private 0700 directory, removed by `remove()` (or
 * `await using`). Passwords go to dump tools this way, never through argv (visible in `ps`) or the environment
 * (visible in /proc/<pid>/environ to the same user, and MYSQL_PWD is deprecated).
 */
export interface SecretFile extends AsyncDisposable {
  readonly path: string
  remove (): Promise<void>
}

export async function writeSecretFile (name: string, content: string, options: { dir?: string } = {}): Promise<SecretFile> {
  const dir = await mkdtemp(path.join(options.dir ?? tmpdir(), 'cloudpilot-secret-'))
  // mkdtemp creates the directory 0700 already; files inside are created 0600 with O_EXCL.
  const file = path.join(dir, name)
  let removed = false
  const remove = async (): Promise<void> => {
    if (removed) return
    removed = true
    await rm(dir, { recursive: true, force: true })
  }
  try {
    await writeFile(file, content, { mode: 0o600, flag: 'wx' })
  } catch (err) {
    await remove()
    throw err
  }
  return { path: file, remove, [Symbol.asyncDispose]: remove }
}

/**
 * `[client]` option file for mysqldump/mariadb-dump `--defaults-extra-file`. The value is double-quoted with
 * the escapes MySQL's option-file parser understands (`\\`, `\"`, `\n`, `\r`, `\t`, `\b`), so a password may
 * hold `#`, quotes, `;`, spaces at either end and backslashes.
 */
export function mysqlOptionFile (options: { password: string }): string {
  return `[client]\npassword="${escapeMysqlOptionValue(options.password)}"\n`
}

export function escapeMysqlOptionValue (value: string): string {
  if (value.includes('\0')) throw new CloudPilotError('ACCESS_DENIED', 'The database password contains a NUL character, which MySQL clients cannot use.')
  return value
    .replace(/\\/g, '\\\\')
    .replace(/"/g, '\\"')
    .replace(/\n/g, '\\n')
    .replace(/\r/g, '\\r')
    .replace(/\t/g, '\\t')
    .replace(/\x08/g, '\\b')
}

/**
 * One PGPASSFILE line matching any host, port and database for this user: `*:*:*:user:password`, with `:` and
 * `\` escaped by a backslash as libpq expects. A newline cannot be represented in a password file.
 */
export function pgPassFile (options: { username?: string, password: string }): string {
  const user = options.username === undefined ? '*' : escapePgPassField(options.username)
  return `*:*:*:${user}:${escapePgPassField(options.password)}\n`
}

export function escapePgPassField (value: string): string {
  if (/[\n\r\0]/.test(value)) {
    throw new CloudPilotError('ACCESS_DENIED', 'The database user name or password contains a line break, which a PostgreSQL password file cannot hold.', { hint: 'Use a password without line breaks for the backup user.' })
  }
  return value.replace(/\\/g, '\\\\').replace(/:/g, '\\:')
}
