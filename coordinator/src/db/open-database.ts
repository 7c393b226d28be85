import { mkdir } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import type { PgDatabase, PgQueryResultHKT } from 'drizzle-orm/pg-core'
import { sql } from 'drizzle-orm'
import * as schema from './schema.ts'

export type Db = PgDatabase<PgQueryResultHKT, typeof schema>

export interface Database {
  db: Db
  kind: 'pglite' | 'postgresql'
  /** LISTEN/NOTIFY-capable raw client for scale-out (PostgreSQL only). */
  close (): Promise<void>
}

const MIGRATIONS = fileURLToPath(new URL('../../migrations', import.meta.url))
/** Serialises migrations when several coordinator replicas start at once on one PostgreSQL. */
const MIGRATION_LOCK = 727_270_001

/** Opens PostgreSQL when a URL is given, else embedded PGlite under dataDir; applies pending migrations. */
export async function openDatabase (options: { databaseUrl: string | null, dataDir: string }): Promise<Database> {
  if (options.databaseUrl !== null) {
    const { default: pg } = await import('pg')
    const { drizzle } = await import('drizzle-orm/node-postgres')
    const { migrate } = await import('drizzle-orm/node-postgres/migrator')
    const pool = new pg.Pool({ connectionString: options.databaseUrl, max: 10 })
    const db = drizzle(pool, { schema })
    const client = await pool.connect()
    try {
      await client.query('select pg_advisory_lock($1)', [MIGRATION_LOCK])
      try {
        await migrate(drizzle(client, { schema }), { migrationsFolder: MIGRATIONS })
      } finally {
        await client.query('select pg_advisory_unlock($1)', [MIGRATION_LOCK])
      }
    } finally {
      client.release()
    }
    return { db: db as unknown as Db, kind: 'postgresql', close: async () => { await pool.end() } }
  }
  const { PGlite } = await import('@electric-sql/pglite')
  const { drizzle } = await import('drizzle-orm/pglite')
  const { migrate } = await import('drizzle-orm/pglite/migrator')
  const dir = path.join(options.dataDir, 'pglite')
  await mkdir(dir, { recursive: true, mode: 0o700 })
  const client = await PGlite.create(dir)
  const db = drizzle(client, { schema })
  await migrate(db, { migrationsFolder: MIGRATIONS })
  await db.execute(sql`select 1`)
  return { db: db as unknown as Db, kind: 'pglite', close: async () => { await client.close() } }
}
