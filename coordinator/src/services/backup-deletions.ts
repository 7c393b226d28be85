import { and, asc, eq, isNotNull, isNull, sql } from 'drizzle-orm'
import type { ErrorData } from '@cloudpilot/protocol'
import type { Db } from '../db/open-database.ts'
import { backups, type Backup, type BackupDeletion, type CopyDeletionState } from '../db/schema.ts'

export type Copy = 'object' | 'localCopy'

/**
 * The one place retention changes backup rows. A backup selected for deletion keeps its status (`completed`)
 * and gets a `deletion` record; each copy moves pending -> deleted (or lost, when its server is gone) through
 * single-statement jsonb updates (safe when the sweeper and an agent's answer on another replica meet); once no
 * copy is pending, `expired_at` is set. Nothing here moves backwards.
 */
export class BackupDeletions {
  readonly #db: Db

  constructor (options: { db: Db }) {
    this.#db = options.db
  }

  /** Selects a completed, not yet selected backup for deletion. False when it was already selected (or is not completed). */
  async select (row: Backup, reason: string, now: Date): Promise<boolean> {
    const hasObject = row.objectKey !== null && row.destinationId !== null
    const deletion: BackupDeletion = {
      reason,
      requestedAt: now.toISOString(),
      object: hasObject ? 'pending' : null,
      localCopy: row.localPath !== null ? 'pending' : null,
      attempts: 0,
      lastAttemptAt: null,
      lastError: null,
    }
    const done = !hasObject && row.localPath === null
    const rows = await this.#db.update(backups).set({ deletion, ...(done ? { expiredAt: now } : {}) })
      .where(and(eq(backups.id, row.id), eq(backups.status, 'completed'), isNull(backups.deletion))).returning({ id: backups.id })
    return rows.length === 1
  }

  /** Deletions still under way, least recently tried first. */
  async pending (limit: number): Promise<Backup[]> {
    return await this.#db.select().from(backups)
      .where(and(isNotNull(backups.deletion), isNull(backups.expiredAt)))
      .orderBy(sql`${backups.deletion}->>'lastAttemptAt' asc nulls first`, asc(backups.createdAt)).limit(limit)
  }

  /** One copy is gone (or lost); sets expired_at when it was the last one pending. */
  async markCopy (backupId: string, copy: Copy, state: Exclude<CopyDeletionState, 'pending'>, now: Date): Promise<void> {
    await this.#db.update(backups).set({ deletion: sql`jsonb_set(${backups.deletion}, ${`{${copy}}`}::text[], ${JSON.stringify(state)}::jsonb)` })
      .where(and(eq(backups.id, backupId), isNull(backups.expiredAt), sql`${backups.deletion}->>${copy} = 'pending'`))
    await this.#finishIfDone(backupId, now)
  }

  /** Counts an attempt; `error` says why it did not finish (null: sent, answer awaited, or done). */
  async attempt (backupId: string, now: Date, error: ErrorData | null): Promise<void> {
    await this.#db.update(backups).set({
      deletion: sql`${backups.deletion} || jsonb_build_object('attempts', coalesce((${backups.deletion}->>'attempts')::int, 0) + 1, 'lastAttemptAt', ${now.toISOString()}::text, 'lastError', ${JSON.stringify(error)}::jsonb)`,
    }).where(and(eq(backups.id, backupId), isNull(backups.expiredAt), isNotNull(backups.deletion)))
  }

  /** Records an error without counting an attempt (e.g. an agent's answer about one copy). */
  async error (backupId: string, error: ErrorData): Promise<void> {
    await this.#db.update(backups).set({ deletion: sql`jsonb_set(${backups.deletion}, '{lastError}', ${JSON.stringify(error)}::jsonb)` })
      .where(and(eq(backups.id, backupId), isNull(backups.expiredAt), isNotNull(backups.deletion)))
  }

  async #finishIfDone (backupId: string, now: Date): Promise<void> {
    await this.#db.update(backups).set({ expiredAt: now, deletion: sql`jsonb_set(${backups.deletion}, '{lastError}', 'null'::jsonb)` })
      .where(and(eq(backups.id, backupId), isNull(backups.expiredAt),
        sql`coalesce(${backups.deletion}->>'object', '') <> 'pending'`,
        sql`coalesce(${backups.deletion}->>'localCopy', '') <> 'pending'`))
  }
}
