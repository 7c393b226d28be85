import type { Logger } from 'pino'
import type { BackupJob, OffsiteStatus } from '@cloudpilot/protocol'
import type { StorageDriver, DestinationInput } from '@cloudpilot/storage'

/** Everything a backup run needs from the agent around it. */
export interface BackupContext {
  /** Aborted on cancel, timeout or agent shutdown; the reason says which. Aborting must kill child process
   *  groups, abort the upload (nothing left under the final key) and remove partial spool files. */
  signal: AbortSignal
  log: Logger
  /** Spool directory for this server, e.g. /tmp/cloudpilot-backups/<serverId>; created on demand (0700). */
  spoolDir: string
  /** Called at most every ~500 ms while bytes flow (bytes = compressed bytes produced so far). */
  onProgress (progress: { bytes: number, bytesPerSecond: number, phase?: string }): void
  /** Called when the offsite state changes (e.g. 'uploading' when the first byte goes to the destination). */
  onOffsiteStatus (status: OffsiteStatus): void
  /** Opens the job's destination driver (injected so tests and the runner share one loader). */
  openDestination (destination: DestinationInput): Promise<StorageDriver>
}

/** What a successful backup produced. Reported to the coordinator as job.status completed. */
export interface BackupResult {
  sizeBytes: number
  sha256: string
  /** Path of the kept local copy, or null when the plan keeps none. */
  localPath: string | null
  /** Key of the uploaded object, or null when there is no destination. */
  objectKey: string | null
  offsiteStatus: OffsiteStatus
  manifest: BackupManifest
}

/** The manifest written beside each object (`<key>.manifest.json`) and the local copy (`<file>.manifest.json`). */
export interface BackupManifest {
  format: 'cloudpilot-backup-manifest/1'
  backupId: string
  planId: string
  serverId: string
  type: BackupJob['type']
  engine: 'mysql' | 'postgresql' | null
  databases: string[]
  paths: string[]
  compression: BackupJob['compression']
  encrypted: boolean
  sizeBytes: number
  sha256: string
  /** Bytes before compression (dump/tar bytes). */
  rawBytes: number
  fileName: string
  createdAt: string
  finishedAt: string
  tools: Record<string, string>
  agentVersion: string
}

export type RunBackup = (job: BackupJob, ctx: BackupContext) => Promise<BackupResult>
