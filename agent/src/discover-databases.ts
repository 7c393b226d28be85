import { CloudPilotError, type DatabaseConnection } from '@cloudpilot/protocol'
import type { SourceOptions } from './sources/archive-source.ts'
import { ProcessRegistry } from './sources/child-process.ts'
import { openDbClient } from './sources/db-client.ts'

export interface DiscoveredDatabase {
  name: string
  /** Databases of the server itself (postgres, template0/1; mysql, sys, information_schema, performance_schema). */
  system: boolean
}

const MYSQL_SYSTEM = new Set(['information_schema', 'mysql', 'performance_schema', 'sys'])

/**
 * Lists the databases a connection can see, with the stock client on this server (psql / mariadb|mysql):
 * CLIENT_MISSING (naming the Debian package), ACCESS_DENIED (with the grant to add), SOURCE_UNREACHABLE, or
 * NO_DATABASES when only system databases are visible. Names come back NUL-separated (psql) or hex-encoded
 * (MySQL), so any name (newlines, tabs, quotes) arrives intact.
 */
export async function discoverDatabases (connection: DatabaseConnection, options: Omit<SourceOptions, 'registry'>): Promise<DiscoveredDatabase[]> {
  const registry = new ProcessRegistry()
  const client = await openDbClient(connection, { ...options, registry, purpose: 'discover' })
  try {
    let found: DiscoveredDatabase[]
    if (connection.engine === 'postgresql') {
      const out = await client.query(
        'SELECT datname, (datistemplate OR datname = \'postgres\')::int FROM pg_database ' +
        'WHERE datistemplate OR has_database_privilege(datname, \'CONNECT\') ORDER BY datname;',
        { zeroSeparated: true, subject: 'listing the databases' })
      const fields = out.split('\0')
      found = []
      for (let i = 0; i + 1 < fields.length; i += 2) found.push({ name: fields[i] as string, system: fields[i + 1] === '1' })
    } else {
      const out = await client.query('SELECT HEX(SCHEMA_NAME) FROM information_schema.SCHEMATA ORDER BY SCHEMA_NAME;', { subject: 'listing the databases' })
      found = out.split('\n').map((l) => l.trim()).filter((l) => l !== '').map((hex) => {
        const name = Buffer.from(hex, 'hex').toString('utf8')
        return { name, system: MYSQL_SYSTEM.has(name.toLowerCase()) }
      })
    }
    if (!found.some((d) => !d.system)) {
      throw new CloudPilotError('NO_DATABASES', `The ${connection.engine === 'postgresql' ? 'PostgreSQL' : 'MySQL/MariaDB'} server has no user databases visible to ${connection.username === undefined ? 'this user' : JSON.stringify(connection.username)}.`, {
        hint: connection.engine === 'postgresql'
          ? 'Create a database, or grant this user CONNECT on the ones that exist: GRANT CONNECT ON DATABASE <name> TO <user>;'
          : 'Create a database, or let this user see the ones that exist: GRANT SHOW DATABASES ON *.* TO \'<user>\'@\'<host>\'; (or privileges on each database).',
      })
    }
    return found
  } finally {
    await registry.terminateAll()
    await client.dispose()
  }
}
