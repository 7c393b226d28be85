import { and, eq, inArray, isNotNull, isNull, lt } from 'drizzle-orm'
import { isTerminal, type BackupStatus, type ErrorData, type JobStatusFrame } from '@cloudpilot/protocol'
import type { Logger } from 'pino'
import type { Db } from '../db/open-database.ts'
import { restores, type Restore } from '../db/schema.ts'
import { compareAndSet, statusTransition, type ApplyOutcome } from './job-status.ts'

/** Appended to a restore that failed without the agent saying what it had written. */
export const UNKNOWN_TARGET_STATE = 'The target may be partially written: check it, remove what the restore wrote (drop the restored databases / the restored files) or restore again with replaceExisting: true.'

/**
 * The one place restore rows change status: the sibling of BackupRecords, with the same forward-only
 * compare-and-set (job-status.ts). Reports come from the target server's agent only.
 */
export class RestoreRecords {
  readonly #db: Db
  readonly #log: Logger

  constructor (options: { db: Db, log: Logger }) {
    this.#db = options.db
    this.#log = options.log
  }

  async get (id: string): Promise<Restore | undefined> {
    const [row] = await this.#db.select().from(restores).where(eq(restores.id, id))
    return row
  }

  /** Applies a job.status report (kind `restore`) from the agent of `serverId`. */
  async applyJobStatus (serverId: string, frame: JobStatusFrame): Promise<ApplyOutcome> {
    return await compareAndSet<Restore, Partial<typeof restores.$inferInsert>>(`restore ${frame.jobId}`,
      async () => {
        const row = await this.get(frame.jobId)
        return row === undefined || row.targetServerId !== serverId ? undefined : row
      },
      // As for backups, AGENT_LOST is an inference from silence: the agent's own report that it finished wins.
      (row) => statusTransition(row, frame, { keepCancelError: true, lateCompletionOfLostJob: true }),
      async (row, update) => {
        const result = await this.#db.update(restores).set(update)
          .where(and(eq(restores.id, row.id), eq(restores.status, row.status))).returning({ id: restores.id })
        if (result.length === 1 && update.status !== undefined && update.status !== row.status) {
          this.#log.info({ restoreId: row.id, from: row.status, to: update.status, code: update.error?.code }, 'restore status changed')
        }
        return result.length === 1
      })
  }

  async updateProgress (serverId: string, jobId: string, progress: { bytes: number, bytesPerSecond: number, phase?: string }): Promise<void> {
    await this.#db.update(restores).set({ progress })
      .where(and(eq(restores.id, jobId), eq(restores.targetServerId, serverId), eq(restores.status, 'in_progress')))
  }

  /** Fails one open restore; a running one may have written part of its target, which the message says. */
  async failIfOpen (restoreId: string, error: ErrorData): Promise<boolean> {
    const row = await this.get(restoreId)
    if (row === undefined || isTerminal(row.status)) return false
    const rows = await this.#db.update(restores).set({ status: 'failed', error: withTargetState(error, row.status), finishedAt: new Date(), progress: null })
      .where(and(eq(restores.id, restoreId), eq(restores.status, row.status))).returning({ id: restores.id })
    return rows.length === 1
  }

  /** Fails every open restore onto the given servers (they went offline): AGENT_LOST. Returns the failed ids. */
  async failOpenOfServers (serverIds: string[], error: ErrorData): Promise<string[]> {
    if (serverIds.length === 0) return []
    const failed: string[] = []
    for (const status of ['pending', 'in_progress'] as const) {
      const rows = await this.#db.update(restores).set({ status: 'failed', error: withTargetState(error, status), finishedAt: new Date(), progress: null })
        .where(and(inArray(restores.targetServerId, serverIds), eq(restores.status, status))).returning({ id: restores.id })
      failed.push(...rows.map((r) => r.id))
    }
    return failed
  }

  /** Pending restores never started within `olderThan`: MISSED. */
  async failStalePending (olderThan: Date, error: ErrorData): Promise<string[]> {
    const rows = await this.#db.update(restores).set({ status: 'failed', error: withTargetState(error, 'pending'), finishedAt: new Date() })
      .where(and(eq(restores.status, 'pending'), lt(restores.createdAt, olderThan))).returning({ id: restores.id })
    return rows.map((r) => r.id)
  }

  async markCancelled (restoreId: string, from: BackupStatus[], error: ErrorData | null): Promise<boolean> {
    const rows = await this.#db.update(restores).set({ status: 'cancelled', finishedAt: new Date(), progress: null, error })
      .where(and(eq(restores.id, restoreId), inArray(restores.status, from))).returning({ id: restores.id })
    return rows.length === 1
  }

  async requestCancel (restoreId: string): Promise<void> {
    await this.#db.update(restores).set({ cancelRequestedAt: new Date() }).where(and(eq(restores.id, restoreId), isNull(restores.cancelRequestedAt)))
  }

  /** Pending restores onto a server, for re-dispatch after its agent reconnects. */
  async pendingOfServer (serverId: string): Promise<Restore[]> {
    return await this.#db.select().from(restores).where(and(eq(restores.targetServerId, serverId), eq(restores.status, 'pending')))
  }

  /** Of the given job ids, those the agent should abort as far as restores know: unknown, cancelled or finished. */
  async jobsToAbort (serverId: string, jobIds: string[]): Promise<string[]> {
    if (jobIds.length === 0) return []
    const rows = await this.#db.select({ id: restores.id, status: restores.status, error: restores.error, cancel: restores.cancelRequestedAt })
      .from(restores).where(and(eq(restores.targetServerId, serverId), inArray(restores.id, jobIds)))
    const known = new Map(rows.map((r) => [r.id, r]))
    return jobIds.filter((id) => {
      const r = known.get(id)
      if (r === undefined || r.cancel !== null) return true
      if (!isTerminal(r.status)) return false
      return !(r.status === 'failed' && r.error?.code === 'AGENT_LOST')
    })
  }

  async cancelRequestedOpen (serverId: string): Promise<string[]> {
    const rows = await this.#db.select({ id: restores.id }).from(restores)
      .where(and(eq(restores.targetServerId, serverId), inArray(restores.status, ['pending', 'in_progress']), isNotNull(restores.cancelRequestedAt)))
    return rows.map((r) => r.id)
  }
}

/** A restore failed by the coordinator: when it had started, its target may be partially written. */
function withTargetState (error: ErrorData, status: BackupStatus): ErrorData {
  if (status !== 'in_progress') return { ...error, message: `${error.message} The agent had not reported starting the restore, so the target is most likely untouched.` }
  return { ...error, message: `${error.message} ${UNKNOWN_TARGET_STATE}` }
}
