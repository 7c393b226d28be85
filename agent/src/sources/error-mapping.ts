import { CloudPilotError, type DatabaseEngine } from '@cloudpilot/protocol'
import { isAbortError } from '@cloudpilot/storage'

/** Hints naming the grants a backup user needs, per engine. */
export const ACCESS_HINTS: Record<DatabaseEngine, string> = {
  mysql: 'Check the username and password. The backup user needs SELECT, SHOW VIEW, TRIGGER, LOCK TABLES and EVENT on the databases (and PROCESS if the server requires it), e.g. GRANT SELECT, SHOW VIEW, TRIGGER, LOCK TABLES, EVENT ON `db`.* TO \'backup\'@\'localhost\'; to include stored routines also SELECT ON mysql.proc (MariaDB before 11.3), SHOW CREATE ROUTINE (MariaDB 11.3+) or SHOW_ROUTINE (MySQL 8.0.20+) — without it the dump tools silently leave routines out.',
  postgresql: 'Check the username and password (and pg_hba.conf). The backup user needs CONNECT on the database and SELECT on all its tables and sequences (USAGE on their schemas), or membership of pg_read_all_data (PostgreSQL 14+): GRANT pg_read_all_data TO backup.',
}

/** Debian package that provides the client tools of an engine. */
export const CLIENT_PACKAGES: Record<DatabaseEngine, string> = {
  mysql: 'mariadb-client',
  postgresql: 'postgresql-client',
}

const ACCESS_PATTERNS: Record<DatabaseEngine, RegExp[]> = {
  postgresql: [
    /password authentication failed/i,
    /no password supplied/i,
    /role "[^"]*" does not exist/i,
    /no pg_hba\.conf entry/i,
    /permission denied for/i,
    /must be (?:superuser|owner)/i,
    /authentication failed/i,
  ],
  mysql: [
    /Access denied for user/i,
    /Access denied; you need/i,
    /command denied to user/i,
  ],
}

const UNREACHABLE_PATTERNS: RegExp[] = [
  /connection refused/i,
  /could not connect/i,
  /could not translate host name/i,
  /Name or service not known/i,
  /Temporary failure in name resolution/i,
  /Unknown (?:MySQL |MariaDB )?server host/i,
  /Can't connect to/i,
  /timeout expired/i,
  /timed out/i,
  /Lost connection to (?:MySQL |MariaDB )?server/i,
  /server closed the connection unexpectedly/i,
  /No route to host/i,
  /Network is unreachable/i,
  /MySQL server has gone away|server has gone away/i,
]

const NOT_FOUND_PATTERNS: RegExp[] = [
  /database "[^"]*" does not exist/i,
  /Unknown database/i,
]

/** Does a stderr text report an error (as opposed to warnings and notices only)? */
export function stderrHasError (stderr: string): boolean {
  for (const line of stderr.split('\n')) {
    if (/\bwarning\b/i.test(line)) continue
    if (/\b(?:error|fatal|panic)\b|couldn't execute|Got error/i.test(line)) return true
  }
  return false
}

/** The last non-empty line of a tool's stderr (its own summary of what went wrong). */
export function lastStderrLine (stderr: string): string {
  const lines = stderr.split('\n').map((l) => l.trim()).filter((l) => l !== '')
  return lines.at(-1) ?? ''
}

/** The most telling error line: the last line that says error, else the last line. */
function errorLine (stderr: string): string {
  const lines = stderr.split('\n').map((l) => l.trim()).filter((l) => l !== '')
  for (let i = lines.length - 1; i >= 0; i--) {
    const line = lines[i] ?? ''
    if (/\b(?:error|fatal)\b|couldn't execute|Got error|Access denied/i.test(line) && !/\bwarning\b/i.test(line)) {
      // pg_dump puts the detail on the next line ("Is the server running …"): keep the first one.
      return line
    }
  }
  return lines.at(-1) ?? ''
}

/** Removes every occurrence of the password (defence in depth: tools do not print it, but never risk it). */
export function redact (text: string, secrets: ReadonlyArray<string | undefined>): string {
  let out = text
  for (const secret of secrets) {
    if (secret === undefined || secret.length < 3) continue
    out = out.split(secret).join('[redacted]')
  }
  return out
}

export interface DumpFailure {
  engine: DatabaseEngine | null
  tool: string
  stderr: string
  code: number | null
  signal: NodeJS.Signals | null
  /** Secrets that must not appear in the message. */
  secrets?: ReadonlyArray<string | undefined>
  /** What was being dumped, for the message (e.g. `database "shop"`). */
  subject?: string
}

/** Maps a failed dump (exit status + stderr) to a registry error with a message that says what happened. */
export function mapDumpFailure (failure: DumpFailure): CloudPilotError {
  const stderr = redact(failure.stderr, failure.secrets ?? [])
  const line = truncate(errorLine(stderr), 500)
  const how = failure.signal !== null ? `was killed by ${failure.signal}` : failure.code !== null && failure.code !== 0 ? `exited with code ${failure.code}` : 'reported an error'
  const base = `${failure.tool} ${how}${failure.subject === undefined ? '' : ` while dumping ${failure.subject}`}`
  const message = line === '' ? base : `${base}: ${line}`
  if (failure.engine !== null) {
    if (ACCESS_PATTERNS[failure.engine].some((re) => re.test(stderr))) {
      return new CloudPilotError('ACCESS_DENIED', message, { hint: ACCESS_HINTS[failure.engine] })
    }
    if (NOT_FOUND_PATTERNS.some((re) => re.test(stderr))) {
      return new CloudPilotError('SOURCE_NOT_FOUND', message, { hint: 'Check the plan\'s database names against the server (POST /api/v1/servers/:id/discover-databases lists them); a renamed or dropped database must be removed from the plan.' })
    }
    if (UNREACHABLE_PATTERNS.some((re) => re.test(stderr))) {
      return new CloudPilotError('SOURCE_UNREACHABLE', message)
    }
  }
  return new CloudPilotError('DUMP_FAILED', message)
}

/** A tool that is not installed (or not executable) on the server. */
export function clientMissing (tool: string, engine: DatabaseEngine | null, cause?: unknown): CloudPilotError {
  const pkg = engine === null ? (tool === 'pigz' ? 'pigz' : tool) : CLIENT_PACKAGES[engine]
  return new CloudPilotError('CLIENT_MISSING', `${tool} is not installed on this server (or not on the agent's PATH).`, {
    hint: `Install it on the server: apt-get install ${pkg} (Debian/Ubuntu).`,
    ...(cause === undefined ? {} : { cause }),
  })
}

/** Maps an error of the spawn call itself (the process never ran). */
export function mapSpawnError (err: NodeJS.ErrnoException, tool: string, engine: DatabaseEngine | null): CloudPilotError {
  if (err.code === 'ENOENT' || err.code === 'EACCES') return clientMissing(tool, engine, err)
  return new CloudPilotError('DUMP_FAILED', `${tool} could not be started: ${err.message}`, { cause: err })
}

/** A write to the local spool failed. */
export function mapSpoolError (err: unknown, file: string): Error {
  if (err instanceof CloudPilotError || isAbortError(err)) return err as Error
  const code = (err as NodeJS.ErrnoException).code
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new CloudPilotError('NO_SPACE', `No space left on the device while writing the local copy ${file}.`, { cause: err })
  }
  if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
    return new CloudPilotError('PERMISSION_DENIED', `The agent may not write the local copy ${file}.`, { cause: err, hint: 'Give the cloudpilot user write access to the spool directory, or turn off keepLocal.' })
  }
  const message = err instanceof Error ? err.message : String(err)
  return new CloudPilotError('DUMP_FAILED', `Writing the local copy ${file} failed: ${message}`, { cause: err })
}

/** Any failure of the destination's put becomes UPLOAD_FAILED carrying the driver's code and message. */
export function mapUploadError (err: unknown, destinationType: string): Error {
  if (isAbortError(err)) return err as Error
  if (err instanceof CloudPilotError) {
    if (err.code === 'UPLOAD_FAILED') return err
    return new CloudPilotError('UPLOAD_FAILED', `Upload to the ${destinationType} destination failed: ${err.code}: ${err.message}`, { cause: err, hint: err.hint, retryable: err.retryable })
  }
  const message = err instanceof Error ? err.message : String(err)
  return new CloudPilotError('UPLOAD_FAILED', `Upload to the ${destinationType} destination failed: ${message}`, { cause: err })
}

function truncate (text: string, max: number): string {
  return text.length <= max ? text : text.slice(0, max - 1) + '…'
}

/** What a database client (psql, mysql) was used for: the same failure means different things. */
export type ClientPurpose = 'restore' | 'discover'

const CLIENT_AUTH_PATTERNS: Record<DatabaseEngine, RegExp[]> = {
  postgresql: [
    /password authentication failed/i,
    /no password supplied/i,
    /role "[^"]*" does not exist/i,
    /no pg_hba\.conf entry/i,
    /authentication failed/i,
  ],
  mysql: [/Access denied for user [^\n]*\(using password: (?:YES|NO)\)/i],
}

const CLIENT_PRIVILEGE_PATTERNS: Record<DatabaseEngine, RegExp[]> = {
  postgresql: [/permission denied/i, /must be (?:superuser|owner)/i, /must be a member of/i],
  mysql: [/Access denied for user/i, /Access denied; you need/i, /command denied to user/i],
}

const CLIENT_HINTS: Record<ClientPurpose, Record<DatabaseEngine, { access: string, privileges: string }>> = {
  restore: {
    postgresql: {
      access: 'Check the restore connection\'s username and password (give them in the request\'s connection; the password is write-only) and pg_hba.conf on the target.',
      privileges: 'The restore user needs CREATEDB (ALTER ROLE <user> CREATEDB) and, to replace a database, must own it; or restore as a superuser.',
    },
    mysql: {
      access: 'Check the restore connection\'s username and password (give them in the request\'s connection; the password is write-only).',
      privileges: 'The restore user needs CREATE and DROP on the target database and what the dump creates (INSERT, CREATE VIEW, CREATE ROUTINE, TRIGGER, EVENT), e.g. GRANT ALL ON `db`.* TO \'restore\'@\'localhost\'; or restore as an administrative user.',
    },
  },
  discover: {
    postgresql: {
      access: 'Check the username and password (and pg_hba.conf). The user needs CONNECT on the databases: GRANT CONNECT ON DATABASE <name> TO <user>;',
      privileges: 'The user needs CONNECT on the databases: GRANT CONNECT ON DATABASE <name> TO <user>;',
    },
    mysql: {
      access: 'Check the username and password. To list databases the user needs SHOW DATABASES (GRANT SHOW DATABASES ON *.* TO \'backup\'@\'localhost\';) or privileges on each database.',
      privileges: 'To list databases the user needs SHOW DATABASES (GRANT SHOW DATABASES ON *.* TO \'backup\'@\'localhost\';) or privileges on each database.',
    },
  },
}

/** The hint for a denied login, per purpose and engine. */
export function clientAccessHint (purpose: ClientPurpose, engine: DatabaseEngine): string {
  return CLIENT_HINTS[purpose][engine].access
}

/**
 * Maps a failed run of psql / mysql (restore or discovery) to the registry: a refused login is ACCESS_DENIED, a
 * missing grant INSUFFICIENT_PRIVILEGES (restore) or ACCESS_DENIED (discovery), an unreachable server
 * TARGET_UNREACHABLE (restore) or SOURCE_UNREACHABLE (discovery), anything else RESTORE_FAILED (restore).
 */
export function mapClientFailure (failure: DumpFailure & { engine: DatabaseEngine, purpose: ClientPurpose }): CloudPilotError {
  const stderr = redact(failure.stderr, failure.secrets ?? [])
  const line = truncate(errorLine(stderr), 500)
  const how = failure.signal !== null ? `was killed by ${failure.signal}` : failure.code !== null && failure.code !== 0 ? `exited with code ${failure.code}` : 'reported an error'
  const base = `${failure.tool} ${how}${failure.subject === undefined ? '' : ` while ${failure.subject}`}`
  const message = line === '' ? base : `${base}: ${line}`
  const hints = CLIENT_HINTS[failure.purpose][failure.engine]
  if (UNREACHABLE_PATTERNS.some((re) => re.test(stderr))) {
    return failure.purpose === 'restore'
      ? new CloudPilotError('TARGET_UNREACHABLE', message, { hint: 'Check that the target database server runs and listens at the restore connection\'s host and port (as seen from the target server).' })
      : new CloudPilotError('SOURCE_UNREACHABLE', message)
  }
  if (CLIENT_AUTH_PATTERNS[failure.engine].some((re) => re.test(stderr))) return new CloudPilotError('ACCESS_DENIED', message, { hint: hints.access })
  if (CLIENT_PRIVILEGE_PATTERNS[failure.engine].some((re) => re.test(stderr))) {
    return new CloudPilotError(failure.purpose === 'restore' ? 'INSUFFICIENT_PRIVILEGES' : 'ACCESS_DENIED', message, { hint: hints.privileges })
  }
  if (failure.purpose === 'restore') return new CloudPilotError('RESTORE_FAILED', message)
  return new CloudPilotError('INTERNAL', message, { hint: `Read the message for ${failure.tool}'s own error; run the same command by hand on the server to reproduce.` })
}
