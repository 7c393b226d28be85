import { canTransition, isTerminal, normaliseErrorData, type BackupStatus, type ErrorData, type JobStatusFrame } from '@cloudpilot/protocol'

/** What applying a job.status report did. */
export type ApplyOutcome = 'applied' | 'stale' | 'unknown-job'

/** The columns every job row (backup, restore) has in common. */
export interface JobRow {
  id: string
  status: BackupStatus
  startedAt: Date | null
  error: ErrorData | null
}

/** The common part of a job row's update for one report. */
export interface StatusUpdate {
  status?: BackupStatus
  startedAt?: Date
  finishedAt?: Date
  progress?: null
  error?: ErrorData | null
  details?: Record<string, unknown>
}

export interface TransitionOptions {
  /** A `completed` report may replace `failed`/AGENT_LOST (the coordinator inferred that from silence). */
  lateCompletionOfLostJob?: boolean
  /** Keep the error the agent sent with `cancelled` (a restore says what may be partially written). */
  keepCancelError?: boolean
}

/**
 * The forward-only status rule shared by backups and restores: pending -> in_progress -> completed|failed|
 * cancelled; a repeated in_progress may update details; anything else late or repeated is stale (null).
 * Sets started/finished times, clears progress at the end, and keeps `error` consistent with the status.
 */
export function statusTransition (row: JobRow, frame: JobStatusFrame, options: TransitionOptions = {}): StatusUpdate | null {
  const to = frame.status
  const lateSuccessOfLostJob = options.lateCompletionOfLostJob === true && row.status === 'failed' && row.error?.code === 'AGENT_LOST' && to === 'completed'
  const sameStateUpdate = row.status === to && row.status === 'in_progress'
  if (!canTransition(row.status, to) && !sameStateUpdate && !lateSuccessOfLostJob) return null

  const update: StatusUpdate = {}
  if (to !== row.status) update.status = to
  if (frame.details !== undefined) update.details = frame.details
  if (to === 'in_progress' && row.startedAt === null) update.startedAt = new Date(frame.at)
  if (isTerminal(to)) {
    update.finishedAt = new Date()
    update.progress = null
    if (row.startedAt === null && to !== 'cancelled') update.startedAt = new Date(frame.at)
    if (to === 'failed') update.error = frame.error != null ? normaliseErrorData(frame.error) : { code: 'INTERNAL', message: 'the agent reported a failure without details' }
    if (to === 'cancelled') update.error = options.keepCancelError === true && frame.error != null ? normaliseErrorData(frame.error) : null
    if (to === 'completed') update.error = null
  }
  return update
}

/**
 * Compare-and-set loop: read the row, compute the update from what was read, write it only if the status is
 * still the one read (`write` returns false otherwise), and retry on a lost race. Concurrent reports of one
 * job therefore never interleave, and a row never moves backwards.
 */
export async function compareAndSet<Row extends { status: BackupStatus }, Update> (
  what: string,
  read: () => Promise<Row | undefined>,
  plan: (row: Row) => Update | null,
  write: (row: Row, update: Update) => Promise<boolean>,
): Promise<ApplyOutcome> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const row = await read()
    if (row === undefined) return 'unknown-job'
    const update = plan(row)
    if (update === null) return 'stale'
    if (await write(row, update)) return 'applied'
  }
  throw new Error(`${what}: status kept changing underneath`)
}
