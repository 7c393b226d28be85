import { and, eq, inArray, lt, sql, isNull, isNotNull } from 'drizzle-orm'
import {
  CloudPilotError, DAY, isTerminal, type BackupStatus, type ErrorData, type JobStatusFrame,
} from '@cloudpilot/protocol'
import type { Logger } from 'pino'
import type { Db } from '../db/open-database.ts'
import { backups, plans, type Backup } from '../db/schema.ts'
import { compareAndSet, statusTransition, type ApplyOutcome } from './job-status.ts'

export type { ApplyOutcome } from './job-status.ts'

/**
 * The one place backup rows change status. Status only moves forward (pending -> in_progress ->
 * completed|failed|cancelled); a late or repeated report never moves a row back. Each update is a
 * compare-and-set on the status read, so concurrent reports cannot interleave.
 */
export class BackupRecords {
  readonly #db: Db
  readonly #log: Logger

  constructor (options: { db: Db, log: Logger }) {
    this.#db = options.db
    this.#log = options.log
  }

  async get (id: string): Promise<Backup | undefined> {
    const [row] = await this.#db.select().from(backups).where(eq(backups.id, id))
    return row
  }

  /**
   * Applies a job.status report from the agent of `serverId`. Only that server's own jobs are accepted.
   * A `completed` report must carry what makes the backup restorable (size, sha256, and an uploaded object
   * when the plan has a destination); otherwise the row fails with VERIFY_FAILED instead.
   */
  async applyJobStatus (serverId: string, frame: JobStatusFrame): Promise<ApplyOutcome> {
    return await compareAndSet<Backup & { retentionDays: number }, Partial<typeof backups.$inferInsert>>(`backup ${frame.jobId}`,
      async () => {
        const [found] = await this.#db.select({ row: backups, retentionDays: plans.retentionDays }).from(backups)
          .innerJoin(plans, eq(plans.id, backups.planId)).where(eq(backups.id, frame.jobId))
        return found === undefined || found.row.serverId !== serverId ? undefined : { ...found.row, retentionDays: found.retentionDays }
      },
      (row) => {
        const update = this.#updateFor(row, frame)
        // The expiry is set in the same statement as the completion: a reader never sees one without the other.
        if (update?.status === 'completed' && update.finishedAt !== undefined && update.finishedAt !== null) {
          update.expiresAt = new Date(update.finishedAt.getTime() + row.retentionDays * DAY)
        }
        return update
      },
      async (row, update) => {
        const result = await this.#db.update(backups).set(update)
          .where(and(eq(backups.id, row.id), eq(backups.status, row.status))).returning({ id: backups.id })
        if (result.length === 1 && update.status !== undefined && update.status !== row.status) {
          this.#log.info({ backupId: row.id, from: row.status, to: update.status, code: update.error?.code }, 'backup status changed')
        }
        return result.length === 1
      })
  }

  #updateFor (row: Backup, frame: JobStatusFrame): Partial<typeof backups.$inferInsert> | null {
    const common = statusTransition(row, frame, { lateCompletionOfLostJob: true })
    if (common === null) return null
    const update: Partial<typeof backups.$inferInsert> = { ...common }
    if (frame.offsiteStatus !== undefined) update.offsiteStatus = frame.offsiteStatus
    if (frame.sizeBytes != null) update.sizeBytes = frame.sizeBytes
    if (frame.sha256 != null) update.sha256 = frame.sha256
    if (frame.localPath !== undefined) update.localPath = frame.localPath
    if (frame.objectKey !== undefined) update.objectKey = frame.objectKey
    if (frame.status === 'completed') {
      const problem = completedProblem(row, frame)
      if (problem !== null) {
        update.status = 'failed'
        update.error = new CloudPilotError('VERIFY_FAILED', problem).toData()
      }
      if (row.status === 'failed' && update.status === 'completed') {
        // AGENT_LOST was the coordinator's inference from silence, not an observed failure: the agent's own
        // report that the archive was made and verified supersedes it (the backup is restorable; hiding it would lose it).
        this.#log.warn({ backupId: row.id }, 'late completion of a backup marked AGENT_LOST: accepted')
      }
    }
    return update
  }

  async updateProgress (serverId: string, jobId: string, progress: { bytes: number, bytesPerSecond: number, phase?: string }): Promise<void> {
    await this.#db.update(backups).set({ progress })
      .where(and(eq(backups.id, jobId), eq(backups.serverId, serverId), eq(backups.status, 'in_progress')))
  }

  /** Fails one open row (pending or in_progress) with an error; no-op when it already finished. */
  async failIfOpen (backupId: string, error: ErrorData): Promise<boolean> {
    const result = await this.#db.update(backups).set({
      status: 'failed', error, finishedAt: new Date(), progress: null,
      offsiteStatus: sql`case when ${backups.offsiteStatus} = 'uploading' then 'failed' else ${backups.offsiteStatus} end`,
    }).where(and(eq(backups.id, backupId), inArray(backups.status, ['pending', 'in_progress']))).returning({ id: backups.id })
    return result.length === 1
  }

  /** Fails the given rows that are still open (pending or in_progress), in one statement. Returns the failed ids. */
  async failOpen (backupIds: string[], error: ErrorData): Promise<string[]> {
    if (backupIds.length === 0) return []
    const rows = await this.#db.update(backups).set({
      status: 'failed', error, finishedAt: new Date(), progress: null,
      offsiteStatus: sql`case when ${backups.offsiteStatus} = 'uploading' then 'failed' else ${backups.offsiteStatus} end`,
    }).where(and(inArray(backups.id, backupIds), inArray(backups.status, ['pending', 'in_progress']))).returning({ id: backups.id })
    return rows.map((r) => r.id)
  }

  /** Fails every open row of the given servers (they went offline): AGENT_LOST. Returns the failed ids. */
  async failOpenOfServers (serverIds: string[], error: ErrorData): Promise<string[]> {
    if (serverIds.length === 0) return []
    const rows = await this.#db.update(backups).set({
      status: 'failed', error, finishedAt: new Date(), progress: null,
      offsiteStatus: sql`case when ${backups.offsiteStatus} = 'uploading' then 'failed' else ${backups.offsiteStatus} end`,
    }).where(and(inArray(backups.serverId, serverIds), inArray(backups.status, ['pending', 'in_progress']))).returning({ id: backups.id })
    return rows.map((r) => r.id)
  }

  /** Pending rows that were never started within `olderThan`: MISSED. */
  async failStalePending (olderThan: Date, error: ErrorData): Promise<string[]> {
    const rows = await this.#db.update(backups).set({ status: 'failed', error, finishedAt: new Date() })
      .where(and(eq(backups.status, 'pending'), lt(backups.createdAt, olderThan))).returning({ id: backups.id })
    return rows.map((r) => r.id)
  }

  async markCancelled (backupId: string, from: BackupStatus[]): Promise<boolean> {
    const rows = await this.#db.update(backups).set({ status: 'cancelled', finishedAt: new Date(), progress: null, error: null,
      offsiteStatus: sql`case when ${backups.offsiteStatus} = 'uploading' then 'failed' else ${backups.offsiteStatus} end` })
      .where(and(eq(backups.id, backupId), inArray(backups.status, from))).returning({ id: backups.id })
    return rows.length === 1
  }

  async requestCancel (backupId: string): Promise<void> {
    await this.#db.update(backups).set({ cancelRequestedAt: new Date() }).where(and(eq(backups.id, backupId), isNull(backups.cancelRequestedAt)))
  }

  /** Open rows of a server, for re-dispatch after its agent reconnects. */
  async pendingOfServer (serverId: string): Promise<Backup[]> {
    return await this.#db.select().from(backups).where(and(eq(backups.serverId, serverId), eq(backups.status, 'pending')))
  }

  /** Of the given job ids, those the agent should abort: unknown, or finished for a reason other than AGENT_LOST. */
  async jobsToAbort (serverId: string, jobIds: string[]): Promise<string[]> {
    if (jobIds.length === 0) return []
    const rows = await this.#db.select({ id: backups.id, status: backups.status, error: backups.error, cancel: backups.cancelRequestedAt })
      .from(backups).where(and(eq(backups.serverId, serverId), inArray(backups.id, jobIds)))
    const known = new Map(rows.map((r) => [r.id, r]))
    return jobIds.filter((id) => {
      const r = known.get(id)
      if (r === undefined) return true
      if (r.cancel !== null) return true
      if (!isTerminal(r.status)) return false
      return !(r.status === 'failed' && r.error?.code === 'AGENT_LOST')
    })
  }

  async cancelRequestedOpen (serverId: string): Promise<string[]> {
    const rows = await this.#db.select({ id: backups.id }).from(backups)
      .where(and(eq(backups.serverId, serverId), inArray(backups.status, ['pending', 'in_progress']), isNotNull(backups.cancelRequestedAt)))
    return rows.map((r) => r.id)
  }
}

function completedProblem (row: Backup, frame: JobStatusFrame): string | null {
  if (frame.sizeBytes == null || frame.sizeBytes <= 0) return 'the agent reported completion without an archive size'
  if (frame.sha256 == null) return 'the agent reported completion without a sha256'
  if (row.destinationId !== null && (frame.offsiteStatus !== 'uploaded' || frame.objectKey == null)) {
    return 'the agent reported completion but the archive was not uploaded to the destination'
  }
  if (row.destinationId === null && frame.localPath == null) return 'the agent reported completion without a local copy or an upload'
  return null
}
