/** The exact strings of DESIGN.md §3, used in the API, the database and on the wire. */

export const BACKUP_TYPES = ['files', 'database', 'full', 'snapshot'] as const
export type BackupType = (typeof BACKUP_TYPES)[number]

export const DATABASE_ENGINES = ['mysql', 'postgresql'] as const
export type DatabaseEngine = (typeof DATABASE_ENGINES)[number]

export const BACKUP_STATUSES = ['pending', 'in_progress', 'completed', 'failed', 'cancelled'] as const
export type BackupStatus = (typeof BACKUP_STATUSES)[number]

export const OFFSITE_STATUSES = ['uploading', 'uploaded', 'failed'] as const
/** `null` means not uploaded / no offsite destination. */
export type OffsiteStatus = (typeof OFFSITE_STATUSES)[number] | null

/** What a job of the agent does: make a backup, or restore one. */
export const JOB_KINDS = ['backup', 'restore'] as const
export type JobKind = (typeof JOB_KINDS)[number]

/** Parts of a `full` backup a restore may write. */
export const RESTORE_PARTS = ['files', 'databases'] as const
export type RestorePart = (typeof RESTORE_PARTS)[number]

export const RESTORE_STATUSES = BACKUP_STATUSES
export type RestoreStatus = BackupStatus

export const STREAM_STATUSES = ['starting', 'running', 'stopping', 'stopped', 'failed'] as const
export type StreamStatus = (typeof STREAM_STATUSES)[number]

export const DESTINATION_TYPES = ['local', 's3', 'sftp', 'azure_blob', 'gcs', 'google_drive', 'cloudinary'] as const
export type DestinationType = (typeof DESTINATION_TYPES)[number]

export const BILLING_STATUSES = ['active', 'suspended', 'failed'] as const
export type BillingStatus = (typeof BILLING_STATUSES)[number]

export const SERVER_STATUSES = ['online', 'offline'] as const
export type ServerStatus = (typeof SERVER_STATUSES)[number]

export const COMPRESSIONS = ['gzip', 'zstd', 'none'] as const
export type Compression = (typeof COMPRESSIONS)[number]

export const TRIGGERS = ['manual', 'scheduled'] as const
export type Trigger = (typeof TRIGGERS)[number]

const TERMINAL: ReadonlySet<BackupStatus> = new Set(['completed', 'failed', 'cancelled'])
const RANK: Record<BackupStatus, number> = { pending: 0, in_progress: 1, completed: 2, failed: 2, cancelled: 2 }

export function isTerminal (status: BackupStatus): boolean {
  return TERMINAL.has(status)
}

/**
 * Status only moves forward: pending -> in_progress -> completed|failed|cancelled.
 * A repeated or late report never moves a row back, and a terminal status is never replaced.
 */
export function canTransition (from: BackupStatus, to: BackupStatus): boolean {
  if (isTerminal(from)) return false
  return RANK[to] > RANK[from]
}

/** Only pending and in_progress backups (and restores) can be cancelled. */
export function isCancellable (status: BackupStatus): boolean {
  return status === 'pending' || status === 'in_progress'
}
