import { readdir, rm } from 'node:fs/promises'
import path from 'node:path'
import type { Logger } from 'pino'
import {
  CloudPilotError, SECOND, toErrorData,
  type BackupJob, type CoordinatorFrame, type DiscoverFrame, type ErrorCode, type ErrorData, type JobKind, type JobSpec,
  type JobStatusFrame, type OffsiteStatus, type RestoreJob, type WelcomeFrame,
} from '@cloudpilot/protocol'
import { openDestination, type DestinationInput, type StorageDriver } from '@cloudpilot/storage'
import type { Outbox } from './outbox.ts'
import type { JobJournal, JournalEntry } from './job-journal.ts'
import type { CoordinatorConnection } from './coordinator-connection.ts'
import type { BackupResult, RunBackup } from './backup/backup-context.ts'
import { describeTargets, nothingWritten, targetNote, type RestoreResult, type RunRestore } from './restore/restore-context.ts'
import { discoverDatabases } from './discover-databases.ts'
import { sendTransfer } from './transfer-sender.ts'
import { deleteBackupCopies } from './backup-deleter.ts'

/** Why a job's signal was aborted. */
export class JobAbort extends Error {
  readonly why: 'cancelled' | 'timeout' | 'shutdown'
  constructor (why: 'cancelled' | 'timeout' | 'shutdown') {
    super(`job ${why}`)
    this.name = 'AbortError'
    this.why = why
  }
}

interface Running {
  controller: AbortController
  done: Promise<void>
}

const PROGRESS_EVERY_MS = 500
/** A database listing that takes longer than this is abandoned (the coordinator waits 60 s). */
const DISCOVER_TIMEOUT_MS = 45 * SECOND

type StatusExtra = Partial<Omit<JobStatusFrame, 'type' | 'id' | 'jobId' | 'kind' | 'status' | 'offsiteStatus' | 'at'>>

async function openJobDestination (d: DestinationInput): Promise<StorageDriver> {
  return await openDestination(d, { allowPrivateEndpoints: (d as { allowPrivateEndpoints?: boolean }).allowPrivateEndpoints === true })
}

/**
 * Runs the jobs the coordinator sends, backups and restores alike: one AbortController each (cancel, timeout,
 * shutdown), status changes through the durable outbox (frames carry the job's kind), progress as best-effort
 * frames, a journal entry while running. Also answers database discovery requests.
 */
export class JobRunner {
  readonly #running = new Map<string, Running>()
  readonly #log: Logger
  readonly #outbox: Outbox
  readonly #journal: JobJournal
  readonly #connection: CoordinatorConnection
  readonly #runBackup: RunBackup
  readonly #runRestore: RunRestore
  readonly #spoolDir: string
  readonly #coordinatorUrl: string
  readonly #credential: string
  readonly #serverId: string | null

  constructor (options: {
    log: Logger
    outbox: Outbox
    journal: JobJournal
    connection: CoordinatorConnection
    runBackup: RunBackup
    runRestore: RunRestore
    spoolDir: string
    coordinatorUrl: string
    credential: string
    /** This server's id: objects outside its keys are never deleted. */
    serverId?: string
  }) {
    this.#serverId = options.serverId ?? null
    this.#log = options.log
    this.#outbox = options.outbox
    this.#journal = options.journal
    this.#connection = options.connection
    this.#runBackup = options.runBackup
    this.#runRestore = options.runRestore
    this.#spoolDir = options.spoolDir
    this.#coordinatorUrl = options.coordinatorUrl
    this.#credential = options.credential
  }

  runningJobIds (): string[] {
    return [...this.#running.keys()]
  }

  /** Jobs the journal says were running when the agent died: report them failed and remove partial files. */
  async recover (leftovers: JournalEntry[]): Promise<void> {
    for (const entry of leftovers) {
      await this.#removePartials(entry.jobId)
      const kind: JobKind = entry.kind === 'restore' ? 'restore' : 'backup'
      const error = kind === 'restore'
        ? new CloudPilotError('AGENT_LOST', `the agent stopped (killed or crashed) while the restore was running; the downloaded archive was removed. The target (${entry.target ?? 'see the restore'}) may be partially written.`, {
          hint: 'Check the target, remove what the restore wrote (drop the restored databases / the restored files), then restore again (replaceExisting: true writes over it).',
        }).toData()
        : new CloudPilotError('AGENT_LOST', 'the agent stopped (killed or crashed) while the job was running; partial files were removed').toData()
      await this.#report(kind, entry.jobId, 'failed', null, { error })
      await this.#journal.end(entry.jobId)
      this.#log.warn({ jobId: entry.jobId }, 'job interrupted by an agent restart reported as failed')
    }
  }

  onWelcome (welcome: WelcomeFrame): void {
    for (const jobId of welcome.cancelJobs) this.cancel(jobId)
  }

  handle (frame: Exclude<CoordinatorFrame, WelcomeFrame>): void {
    switch (frame.type) {
      case 'job.run': {
        const job = frame.job
        if (this.#running.has(job.jobId) || this.#journal.hasFinished(job.jobId) || this.#outbox.jobIds().has(job.jobId)) {
          // Re-sent after a reconnect: already running or done (its status is in the outbox).
          this.#connection.send({ type: 'ack', ackId: frame.id, ok: true })
          return
        }
        this.#connection.send({ type: 'ack', ackId: frame.id, ok: true })
        this.#start(job)
        return
      }
      case 'job.cancel':
        this.cancel(frame.jobId)
        return
      case 'transfer.send': {
        const controller = new AbortController()
        const timer = setTimeout(() => controller.abort(), 6 * 3600 * SECOND)
        sendTransfer(frame, { coordinatorUrl: this.#coordinatorUrl, credential: this.#credential, spoolDir: this.#spoolDir, signal: controller.signal })
          .catch((err: unknown) => {
            this.#log.warn({ transferId: frame.transferId, err: (err as Error).message }, 'transfer failed')
            this.#connection.send({ type: 'transfer.status', transferId: frame.transferId, error: toErrorData(err, 'UPLOAD_FAILED') })
          })
          .finally(() => clearTimeout(timer))
        return
      }
      case 'destination.test': {
        const d = frame.destination
        openDestination(d, { allowPrivateEndpoints: d.allowPrivateEndpoints === true })
          .then(async (driver) => {
            try { return await driver.test({ signal: AbortSignal.timeout(60 * SECOND) }) } finally { await driver.close().catch(() => {}) }
          })
          .then((result) => {
            this.#connection.send({ type: 'destination.test.result', requestId: frame.id, ok: true, latencyMs: result.latencyMs, ...(result.hostKeyFingerprint === undefined ? {} : { hostKeyFingerprint: result.hostKeyFingerprint }) })
          }, (err: unknown) => {
            this.#connection.send({ type: 'destination.test.result', requestId: frame.id, ok: false, error: toErrorData(err, 'UNREACHABLE') })
          })
        return
      }
      case 'backup.delete':
        deleteBackupCopies(frame, { spoolDir: this.#spoolDir, serverId: this.#serverId })
          .then((result) => {
            this.#log.info({ backupId: frame.backupId, localCopy: result.localCopy?.ok ?? null, object: result.object?.ok ?? null }, 'retention: deleted backup copies')
            this.#connection.send({ type: 'backup.delete.result', requestId: frame.id, backupId: frame.backupId, ...result })
          })
          .catch((err: unknown) => this.#log.error({ err, backupId: frame.backupId }, 'retention: deleting backup copies failed'))
        return
      case 'discover':
        this.#discover(frame)
        return
      case 'ack':
      case 'error':
        return
    }
  }

  cancel (jobId: string): boolean {
    const r = this.#running.get(jobId)
    if (r === undefined) return false
    this.#log.info({ jobId }, 'cancelling job')
    r.controller.abort(new JobAbort('cancelled'))
    return true
  }

  #start (job: JobSpec): void {
    const controller = new AbortController()
    const log = this.#log.child(job.kind === 'backup' ? { jobId: job.jobId, planId: job.planId } : { jobId: job.jobId, restoreOf: job.backupId })
    const done = this.#runJob(job, controller, log).catch((err: unknown) => log.error({ err }, 'job bookkeeping failed'))
      .finally(() => { this.#running.delete(job.jobId) })
    this.#running.set(job.jobId, { controller, done })
  }

  /** What every job shares: journal entry, in_progress, the timeout, and the journal's end whatever happens. */
  async #runJob (job: JobSpec, controller: AbortController, log: Logger): Promise<void> {
    await this.#journal.begin({
      jobId: job.jobId,
      kind: job.kind,
      startedAt: new Date().toISOString(),
      spoolPrefix: path.join(this.#spoolDir, job.jobId),
      ...(job.kind === 'restore' ? { target: describeTargets(job) } : {}),
    })
    await this.#report(job.kind, job.jobId, 'in_progress', null)
    const timeout = setTimeout(() => controller.abort(new JobAbort('timeout')), job.timeoutSeconds * SECOND)
    try {
      if (job.kind === 'backup') await this.#backup(job, controller, log)
      else await this.#restore(job, controller, log)
    } finally {
      clearTimeout(timeout)
      await this.#journal.end(job.jobId)
    }
  }

  /** Progress frames, at most every PROGRESS_EVERY_MS. */
  #progressReporter (kind: JobKind, jobId: string): (p: { bytes: number, bytesPerSecond: number, phase?: string }) => void {
    let last = 0
    return (p) => {
      const now = Date.now()
      if (now - last < PROGRESS_EVERY_MS && p.phase !== 'completed') return
      last = now
      this.#connection.send({ type: 'job.progress', jobId, kind, bytes: p.bytes, bytesPerSecond: p.bytesPerSecond, ...(p.phase === undefined ? {} : { phase: p.phase }) })
    }
  }

  /**
   * How a job that threw ends: `cancelled` when cancelled, else `failed` with TIMEOUT / AGENT_LOST (stopped by a
   * shutdown) or the error itself (`fallback` when it carries no registry code).
   */
  #outcome (controller: AbortController, err: unknown, what: string, timeoutSeconds: number, fallback: ErrorCode): { status: 'cancelled' } | { status: 'failed', error: ErrorData } {
    const reason: unknown = controller.signal.aborted ? controller.signal.reason : undefined
    if (reason instanceof JobAbort && reason.why === 'cancelled') return { status: 'cancelled' }
    if (reason instanceof JobAbort) {
      return {
        status: 'failed',
        error: reason.why === 'timeout'
          ? new CloudPilotError('TIMEOUT', `the ${what} ran longer than its timeoutSeconds (${timeoutSeconds} s) and was stopped`, what === 'restore' ? { hint: 'Restore again with a larger timeoutSeconds in the request.' } : undefined).toData()
          : new CloudPilotError('AGENT_LOST', `the agent was stopped while the ${what} ran`).toData(),
      }
    }
    return { status: 'failed', error: toErrorData(err, fallback) }
  }

  async #backup (job: BackupJob, controller: AbortController, log: Logger): Promise<void> {
    let offsite: OffsiteStatus = null
    const started = Date.now()
    log.info({ type: job.type, destination: job.destination?.type ?? null }, 'backup started')
    try {
      const result: BackupResult = await this.#runBackup(job, {
        signal: controller.signal,
        log,
        spoolDir: this.#spoolDir,
        openDestination: openJobDestination,
        onProgress: this.#progressReporter('backup', job.jobId),
        onOffsiteStatus: (status) => {
          offsite = status
          this.#report('backup', job.jobId, 'in_progress', status).catch((err: unknown) => log.error({ err }, 'could not record offsite status'))
        },
      })
      await this.#report('backup', job.jobId, 'completed', result.offsiteStatus, {
        sizeBytes: result.sizeBytes,
        sha256: result.sha256,
        localPath: result.localPath,
        objectKey: result.objectKey,
        details: { manifest: result.manifest, durationMs: Date.now() - started },
      })
      log.info({ sizeBytes: result.sizeBytes, durationMs: Date.now() - started }, 'backup completed')
    } catch (err) {
      const failedOffsite: OffsiteStatus = offsite === 'uploading' ? 'failed' : offsite
      const outcome = this.#outcome(controller, err, 'backup', job.timeoutSeconds, 'DUMP_FAILED')
      if (outcome.status === 'cancelled') {
        await this.#report('backup', job.jobId, 'cancelled', failedOffsite)
        log.info('backup cancelled')
      } else {
        await this.#report('backup', job.jobId, 'failed', failedOffsite, { error: outcome.error })
        log.warn({ code: outcome.error.code, reason: outcome.error.message }, 'backup failed')
      }
    }
  }

  /**
   * A restore ends like a backup, and its failure or cancel also says whether the target may be partially
   * written (what the run had touched) and how to clean it up.
   */
  async #restore (job: RestoreJob, controller: AbortController, log: Logger): Promise<void> {
    const started = Date.now()
    const written = nothingWritten(job.backup.engine)
    log.info({ type: job.backup.type, target: describeTargets(job) }, 'restore started')
    try {
      const result: RestoreResult = await this.#runRestore(job, {
        signal: controller.signal,
        log,
        spoolDir: this.#spoolDir,
        openDestination: openJobDestination,
        onProgress: this.#progressReporter('restore', job.jobId),
        written,
      })
      await this.#report('restore', job.jobId, 'completed', null, { details: { restored: result, durationMs: Date.now() - started } })
      log.info({ durationMs: Date.now() - started }, 'restore completed')
    } catch (err) {
      const note = targetNote(written)
      const details = { targetMayBePartial: note.partial, durationMs: Date.now() - started }
      const outcome = this.#outcome(controller, err, 'restore', job.timeoutSeconds, 'RESTORE_FAILED')
      const error: ErrorData = outcome.status === 'cancelled'
        ? new CloudPilotError('CANCELLED', 'The restore was cancelled.', { hint: 'Restore again when needed.' }).toData()
        : outcome.error
      error.message = `${error.message} ${note.message}`
      if (note.partial) error.hint = `${note.hint} ${error.hint ?? ''}`.trim()
      await this.#report('restore', job.jobId, outcome.status, null, { error, details })
      if (outcome.status === 'cancelled') log.info({ partial: note.partial }, 'restore cancelled')
      else log.warn({ code: error.code, reason: error.message }, 'restore failed')
    }
  }

  #discover (frame: DiscoverFrame): void {
    const signal = AbortSignal.timeout(DISCOVER_TIMEOUT_MS)
    discoverDatabases(frame.connection, { signal, log: this.#log })
      .then((databases) => {
        this.#connection.send({ type: 'discover.result', requestId: frame.id, databases })
      }, (err: unknown) => {
        const error = signal.aborted
          ? new CloudPilotError('AGENT_TIMEOUT', `listing the databases took longer than ${DISCOVER_TIMEOUT_MS / SECOND} s`).toData()
          : toErrorData(err)
        this.#log.info({ code: error.code, reason: error.message }, 'database discovery failed')
        this.#connection.send({ type: 'discover.result', requestId: frame.id, error })
      })
  }

  async #report (kind: JobKind, jobId: string, status: JobStatusFrame['status'], offsiteStatus: OffsiteStatus, extra: StatusExtra = {}): Promise<void> {
    // A frame the coordinator's schema refuses would be re-sent forever: keep the error within its limits.
    if (extra.error != null) extra = { ...extra, error: fitError(extra.error) }
    await this.#outbox.add({ type: 'job.status', jobId, kind, status, offsiteStatus, at: new Date().toISOString(), ...extra })
    this.#connection.flushOutbox()
  }

  async #removePartials (jobId: string): Promise<void> {
    let names: string[] = []
    try {
      names = await readdir(this.#spoolDir)
    } catch { return }
    for (const name of names) {
      if (name.startsWith(jobId) && name.includes('.part')) await rm(path.join(this.#spoolDir, name), { force: true })
    }
  }

  /** SIGTERM: let running jobs finish within the grace period, then abort them (they report failed). */
  async shutdown (graceMs: number): Promise<void> {
    if (this.#running.size === 0) return
    this.#log.info({ jobs: this.runningJobIds(), graceMs }, 'waiting for running jobs before stopping')
    const all = Promise.all([...this.#running.values()].map((r) => r.done))
    const timer = setTimeout(() => {
      for (const r of this.#running.values()) r.controller.abort(new JobAbort('shutdown'))
    }, graceMs)
    await all
    clearTimeout(timer)
  }
}

function cut (text: string, max: number): string {
  return text.length <= max ? text : text.slice(0, max - 1) + '…'
}

/** Error data within the limits of the job.status frame (message 4096, hint 2048 characters). */
function fitError<E extends { message: string, hint?: string }> (error: E): E {
  const out = { ...error, message: cut(error.message, 4000) }
  if (out.hint !== undefined) out.hint = cut(out.hint, 2000)
  return out
}
