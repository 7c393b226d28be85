import { and, eq, lt, or, sql } from 'drizzle-orm'
import type { Db } from '../db/open-database.ts'
import { leases } from '../db/schema.ts'

/**
 * Named leases in the database: one holder at a time for a cluster-wide chore. A row claim, not an advisory lock,
 * so it needs no dedicated connection, works the same on PGlite, and frees itself when its holder dies (it
 * expires). Times are the database's, shared by every replica.
 */

/** Takes or renews the lease for `ttlMs`; false when another holder has it and it has not expired. */
export async function tryLease (db: Db, name: string, holder: string, ttlMs: number): Promise<boolean> {
  const until = sql`now() + ${`${Math.ceil(ttlMs)} milliseconds`}::interval`
  const rows = await db.insert(leases).values({ name, holder, expiresAt: until })
    .onConflictDoUpdate({
      target: leases.name,
      set: { holder, expiresAt: until },
      setWhere: or(lt(leases.expiresAt, sql`now()`), eq(leases.holder, holder)),
    }).returning({ holder: leases.holder })
  return rows[0]?.holder === holder
}

/** Gives the lease up (no-op when someone else holds it). */
export async function releaseLease (db: Db, name: string, holder: string): Promise<void> {
  await db.delete(leases).where(and(eq(leases.name, name), eq(leases.holder, holder)))
}
