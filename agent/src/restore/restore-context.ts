import type { Logger } from 'pino'
import type { DatabaseEngine, RestoreJob } from '@cloudpilot/protocol'
import type { DestinationInput, StorageDriver } from '@cloudpilot/storage'
import type { FilesRestored } from './file-extractor.ts'

/** What a restore has written to its target so far: a failure or cancel reports these as possibly partial. */
export interface WrittenTargets {
  engine: DatabaseEngine | null
  /** Target databases this restore created (after dropping them when `replaced`). */
  databases: string[]
  /** Of those, the ones that existed before and were dropped (their previous content is gone). */
  replaced: string[]
  /** The files target, once the first entry was written there. */
  path: string | null
}

export function nothingWritten (engine: DatabaseEngine | null = null): WrittenTargets {
  return { engine, databases: [], replaced: [], path: null }
}

/** Everything a restore run needs from the agent around it. */
export interface RestoreContext {
  /** Aborted on cancel, timeout or shutdown: kills the restore tools' process groups, removes temp files. */
  signal: AbortSignal
  log: Logger
  /** The agent's spool for this server: the downloaded archive is staged here (0600) and removed after. */
  spoolDir: string
  onProgress (progress: { bytes: number, bytesPerSecond: number, phase?: string }): void
  openDestination (destination: DestinationInput): Promise<StorageDriver>
  /** Filled in by the run as it writes to the target. */
  written: WrittenTargets
}

export interface RestoredDatabase {
  source: string
  target: string
  /** It existed and was dropped and recreated (replaceExisting). */
  replaced: boolean
}

export interface RestoreResult {
  databases: RestoredDatabase[]
  files: FilesRestored | null
  /** Where the archive was read from. */
  archive: 'spool' | 'local-destination' | 'download'
  /** Archive bytes read (compressed). */
  bytes: number
  verifySeconds: number
  restoreSeconds: number
}

export type RunRestore = (job: RestoreJob, ctx: RestoreContext) => Promise<RestoreResult>

function quoted (engine: DatabaseEngine | null, name: string): string {
  return engine === 'mysql' ? '`' + name.replace(/`/g, '``') + '`' : `"${name.replace(/"/g, '""')}"`
}

/**
 * What a failed or cancelled restore says about its target: whether it may be partially written and how to
 * clean it up. `message` is appended to the error message; `hint` replaces the generic hint when partial.
 */
export function targetNote (written: WrittenTargets): { partial: boolean, message: string, hint: string } {
  const parts: string[] = []
  const cleanup: string[] = []
  if (written.databases.length > 0) {
    const names = written.databases.map((d) => JSON.stringify(d)).join(', ')
    parts.push(`The target database${written.databases.length > 1 ? 's' : ''} ${names} may be partially written${written.replaced.length > 0 ? ` (${written.replaced.map((d) => JSON.stringify(d)).join(', ')} existed and was dropped by this restore: its previous content is gone)` : ''}.`)
    cleanup.push(`drop ${written.databases.map((d) => `DROP DATABASE ${quoted(written.engine, d)};`).join(' ')} or restore again with replaceExisting: true`)
  }
  if (written.path !== null) {
    parts.push(`Files under ${written.path} may be partially restored.`)
    cleanup.push(`remove what the restore wrote under ${written.path} (or restore again with replaceExisting: true)`)
  }
  if (parts.length === 0) return { partial: false, message: 'Nothing was written to the target.', hint: '' }
  return { partial: true, message: parts.join(' '), hint: `To clean up: ${cleanup.join('; ')}.` }
}

/** The targets of a job as a short text (journal entries, logs). */
export function describeTargets (job: RestoreJob): string {
  const out: string[] = []
  if (job.database !== null) {
    const name = job.database.targetDatabase ?? job.database.sourceDatabase
    out.push(name === null ? `databases ${job.backup.databases.map((d) => JSON.stringify(d)).join(', ')}` : `database ${JSON.stringify(name)}`)
  }
  if (job.targetPath !== null) out.push(`files under ${job.targetPath}`)
  return out.join(' and ')
}
