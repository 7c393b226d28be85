import { randomUUID } from 'node:crypto'
import { and, eq, isNull } from 'drizzle-orm'
import type { Logger } from 'pino'
import {
  CloudPilotError, DatabaseName, AbsolutePath, isCancellable, RESTORE_PARTS,
  type Compression, type DatabaseEngine, type RestoreJob, type RestorePart,
} from '@cloudpilot/protocol'
import type { Db } from '../db/open-database.ts'
import { backups, destinations, plans, servers, restores, type Backup, type Destination, type Plan, type Restore, type RestoreConnection } from '../db/schema.ts'
import type { SecretBox } from '../crypto/secret-box.ts'
import type { AgentHub } from '../hub/agent-hub.ts'
import { validateWith } from '../http/validate.ts'
import { destinationSpec } from './job-builder.ts'
import type { RestoreRecords } from './restore-records.ts'

/** What POST /backups/:id/restore takes (DESIGN §7, plus the few knobs a restore needs). */
export interface RestoreRequest {
  targetServerId?: string
  targetDatabase?: string
  sourceDatabase?: string
  replaceExisting?: boolean
  targetPath?: string
  parts?: RestorePart[]
  connection?: { host?: string, port?: number, username?: string, password?: string, socket?: string }
  timeoutSeconds?: number
}

interface BackupManifestLike { engine?: DatabaseEngine | null, databases?: string[], compression?: Compression }

/** Where the target agent reads the archive from, or null when it cannot reach it. */
interface ArchiveLocation { localPath: string | null, objectKey: string | null, destination: Destination | null }

/**
 * Restores: validates a request against the backup, records the restore row (`pending`) and sends job.run of
 * kind `restore` to the target server's agent, which fetches the archive itself. Also cancel and re-dispatch
 * after a reconnect, as the Dispatcher does for backups.
 */
export class RestoreService {
  readonly #db: Db
  readonly #hub: AgentHub
  readonly #records: RestoreRecords
  readonly #secrets: SecretBox
  readonly #log: Logger
  readonly #allowPrivateEndpoints: boolean

  constructor (options: { db: Db, hub: AgentHub, records: RestoreRecords, secrets: SecretBox, log: Logger, allowPrivateEndpoints: boolean }) {
    this.#db = options.db
    this.#hub = options.hub
    this.#records = options.records
    this.#secrets = options.secrets
    this.#log = options.log
    this.#allowPrivateEndpoints = options.allowPrivateEndpoints
  }

  async create (backup: Backup, request: RestoreRequest): Promise<Restore> {
    if (backup.status !== 'completed') {
      throw new CloudPilotError('SOURCE_NOT_COMPLETED', `Backup ${backup.id} is ${backup.status}; only completed backups can be restored.`)
    }
    if (backup.deletion !== null) {
      throw new CloudPilotError('OBJECT_NOT_FOUND', `Backup ${backup.id} expired and retention deleted (or is deleting) its copies.`, { hint: 'Pick a newer backup of the plan.' })
    }
    const [plan] = await this.#db.select().from(plans).where(eq(plans.id, backup.planId))
    if (plan === undefined) throw new Error(`plan ${backup.planId} of backup ${backup.id} is gone`)
    if (backup.type === 'snapshot') throw new CloudPilotError('UNSUPPORTED', 'Snapshots are restored with the provider\'s own tools.')
    if (backup.fileName.endsWith('.age')) throw new CloudPilotError('UNSUPPORTED', 'Restoring encrypted backups is not supported yet.')

    const targetServerId = request.targetServerId ?? backup.serverId
    const [server] = await this.#db.select({ id: servers.id, name: servers.name }).from(servers)
      .where(and(eq(servers.id, targetServerId), eq(servers.workspaceId, backup.workspaceId), isNull(servers.revokedAt)))
    if (server === undefined) throw new CloudPilotError('NOT_FOUND', `no server ${targetServerId}`)

    const parts = this.#parts(backup, request)
    const manifest = manifestOf(backup)
    const planDb = planDatabaseSource(plan)
    const engine = manifest.engine ?? planDb?.engine ?? null
    const databases = manifest.databases ?? planDb?.databases ?? []

    let connection: RestoreConnection | null = null
    let secret: string | null = null
    if (parts.includes('databases')) {
      if (engine === null) throw new CloudPilotError('VALIDATION_FAILED', 'The backup records no database engine, so its databases cannot be restored.')
      if (request.sourceDatabase !== undefined) {
        validateWith(DatabaseName, request.sourceDatabase, 'sourceDatabase')
        if (!databases.includes(request.sourceDatabase)) {
          throw new CloudPilotError('VALIDATION_FAILED', `sourceDatabase: the backup holds no database ${JSON.stringify(request.sourceDatabase)}; it holds ${databases.map((d) => JSON.stringify(d)).join(', ')}`)
        }
      }
      if (request.targetDatabase !== undefined) {
        validateWith(DatabaseName, request.targetDatabase, 'targetDatabase')
        if (databases.length > 1 && request.sourceDatabase === undefined) {
          throw new CloudPilotError('VALIDATION_FAILED', `targetDatabase: the backup holds ${databases.length} databases (${databases.map((d) => JSON.stringify(d)).join(', ')}); name the one to restore under the new name with sourceDatabase`)
        }
      }
      const base: RestoreConnection = { engine }
      for (const key of ['host', 'port', 'username', 'socket'] as const) {
        const value = request.connection?.[key] ?? planDb?.[key]
        if (value !== undefined) (base as unknown as Record<string, unknown>)[key] = value
      }
      if (request.connection?.host !== undefined || request.connection?.port !== undefined) delete base.socket
      if (request.connection?.socket !== undefined) { delete base.host; delete base.port }
      connection = base
      secret = request.connection?.password ?? planPassword(plan, this.#secrets)
    } else if (request.sourceDatabase !== undefined || request.targetDatabase !== undefined || request.connection !== undefined) {
      throw new CloudPilotError('VALIDATION_FAILED', 'sourceDatabase, targetDatabase and connection apply to restores of databases only')
    }

    if (parts.includes('files')) {
      if (request.targetPath === undefined) {
        throw new CloudPilotError('VALIDATION_FAILED', 'targetPath is required to restore files: an absolute directory on the target server (it must be empty unless replaceExisting: true; "/" with replaceExisting: true restores in place)')
      }
      validateWith(AbsolutePath, request.targetPath, 'targetPath')
    } else if (request.targetPath !== undefined) {
      throw new CloudPilotError('VALIDATION_FAILED', 'targetPath applies to restores of files only')
    }

    const location = await this.#locate(backup, targetServerId)
    if (location === null) {
      throw new CloudPilotError('ARCHIVE_NOT_REACHABLE', `The archive of backup ${backup.id} is stored only on the server that made it (${backup.localPath !== null ? 'its local copy' : 'a local destination'} on server ${backup.serverId}); server ${targetServerId} cannot read it.`)
    }
    if (!this.#hub.isConnected(targetServerId)) {
      throw new CloudPilotError('TARGET_UNREACHABLE', `The agent of the target server ${JSON.stringify(server.name)} is not connected; nothing was started.`, { hint: 'Check the agent on the target server (systemctl status cloudpilot-agent) and restore again once it is online.' })
    }

    const [row] = await this.#db.insert(restores).values({
      id: randomUUID(),
      workspaceId: backup.workspaceId,
      backupId: backup.id,
      targetServerId,
      sourceDatabase: parts.includes('databases') ? request.sourceDatabase ?? null : null,
      targetDatabase: parts.includes('databases') ? request.targetDatabase ?? null : null,
      targetPath: parts.includes('files') ? request.targetPath ?? null : null,
      replaceExisting: request.replaceExisting ?? false,
      parts,
      connection,
      connectionSecretEnc: secret === null ? null : this.#secrets.sealJson({ password: secret }),
      timeoutSeconds: request.timeoutSeconds ?? plan.timeoutSeconds,
      status: 'pending',
    }).returning()
    if (row === undefined) throw new Error('insert returned nothing')
    await this.dispatch(row, backup, location)
    return (await this.#records.get(row.id)) ?? row
  }

  #parts (backup: Backup, request: RestoreRequest): RestorePart[] {
    const own: RestorePart[] = backup.type === 'database' ? ['databases'] : backup.type === 'files' ? ['files'] : [...RESTORE_PARTS]
    if (request.parts === undefined) return own
    const asked = [...new Set(request.parts)]
    if (asked.length === 0) throw new CloudPilotError('VALIDATION_FAILED', 'parts: name at least one of files, databases')
    const foreign = asked.filter((p) => !own.includes(p))
    if (foreign.length > 0) throw new CloudPilotError('VALIDATION_FAILED', `parts: a ${backup.type} backup has no ${foreign.join(', ')}`)
    return asked
  }

  /**
   * The target agent reads the archive itself: its own spool copy when it made the backup, else the
   * destination object, unless that destination is `local` (a directory on the backed-up server). Backup bytes
   * never cross the coordinator, so an archive only on another server is not reachable (null).
   */
  async #locate (backup: Backup, targetServerId: string): Promise<ArchiveLocation | null> {
    const sameServer = targetServerId === backup.serverId
    const [destination] = backup.destinationId === null ? [] : await this.#db.select().from(destinations).where(eq(destinations.id, backup.destinationId))
    const localPath = sameServer ? backup.localPath : null
    const usable = backup.objectKey !== null && destination !== undefined && (destination.type !== 'local' || sameServer)
    if (localPath === null && !usable) return null
    return { localPath, objectKey: usable ? backup.objectKey : null, destination: usable ? destination ?? null : null }
  }

  /** Sends job.run for a pending restore; an agent gone meanwhile fails it (TARGET_UNREACHABLE). */
  async dispatch (row: Restore, backupRow?: Backup, location?: ArchiveLocation | null): Promise<boolean> {
    const backup = backupRow ?? (await this.#db.select().from(backups).where(eq(backups.id, row.backupId)))[0]
    if (backup === undefined) throw new Error(`backup ${row.backupId} of restore ${row.id} is gone`)
    const where = location === undefined ? await this.#locate(backup, row.targetServerId) : location
    if (where === null) {
      await this.#records.failIfOpen(row.id, new CloudPilotError('ARCHIVE_NOT_REACHABLE', 'the archive is no longer reachable from the target server').toData())
      return false
    }
    const session = this.#hub.get(row.targetServerId)
    const sent = session?.send({ type: 'job.run', id: `restore-${row.id}`, job: this.#job(row, backup, where) }) ?? false
    if (!sent) {
      await this.#records.failIfOpen(row.id, new CloudPilotError('TARGET_UNREACHABLE', 'the target server\'s agent disconnected before the restore could be sent to it.', { hint: 'Restore again once the target server\'s agent is online.' }).toData())
    } else {
      this.#log.info({ restoreId: row.id, backupId: row.backupId, serverId: row.targetServerId }, 'restore dispatched')
    }
    return sent
  }

  /** The job.run payload. Carries decrypted secrets: never log it. */
  #job (row: Restore, backup: Backup, where: ArchiveLocation): RestoreJob {
    const manifest = manifestOf(backup)
    const password = row.connectionSecretEnc === null ? undefined : this.#secrets.openJson<{ password?: string }>(row.connectionSecretEnc).password
    if (backup.sha256 === null || backup.sizeBytes === null) throw new Error(`completed backup ${backup.id} without sha256/size`)
    return {
      kind: 'restore',
      jobId: row.id,
      backupId: backup.id,
      serverId: row.targetServerId,
      backup: {
        type: backup.type,
        compression: manifest.compression ?? compressionOf(backup.fileName),
        encrypted: false,
        sha256: backup.sha256,
        sizeBytes: backup.sizeBytes,
        engine: row.connection?.engine ?? manifest.engine ?? null,
        databases: manifest.databases ?? [],
      },
      archive: {
        localPath: where.localPath,
        objectKey: where.objectKey,
        destination: where.destination === null ? null : destinationSpec(where.destination, this.#secrets, this.#allowPrivateEndpoints),
      },
      database: row.connection === null ? null : {
        connection: { ...row.connection, ...(password === undefined ? {} : { password }) },
        sourceDatabase: row.sourceDatabase,
        targetDatabase: row.targetDatabase,
      },
      targetPath: row.targetPath,
      replaceExisting: row.replaceExisting,
      timeoutSeconds: row.timeoutSeconds,
      createdAt: row.createdAt.toISOString(),
    }
  }

  /** After an agent (re)connects: re-send pending restores it is not running; settle cancels it missed. */
  async redispatch (serverId: string, runningJobs: string[]): Promise<void> {
    const running = new Set(runningJobs)
    for (const row of await this.#records.pendingOfServer(serverId)) {
      if (running.has(row.id)) continue
      if (row.cancelRequestedAt !== null) {
        await this.#records.markCancelled(row.id, ['pending'], cancelledBeforeStart())
        continue
      }
      await this.dispatch(row)
    }
  }

  /**
   * Cancel: a pending restore is cancelled at once (and the agent told, in case job.run is in flight); a running
   * one gets job.cancel and becomes `cancelled` when the agent confirms it stopped, with what may be partial.
   */
  async cancel (row: Restore): Promise<Restore> {
    if (!isCancellable(row.status)) throw new CloudPilotError('NOT_CANCELLABLE', `restore is ${row.status}`)
    await this.#records.requestCancel(row.id)
    const sent = this.#hub.send(row.targetServerId, { type: 'job.cancel', jobId: row.id })
    if (row.status === 'pending') await this.#records.markCancelled(row.id, ['pending'], cancelledBeforeStart())
    else if (!sent) {
      await this.#records.markCancelled(row.id, ['pending', 'in_progress'], new CloudPilotError('CANCELLED', 'The restore was cancelled while the target server\'s agent was unreachable; it stops the restore when it reconnects. The target may be partially written.', { hint: 'Check the target once the agent is back; drop the restored databases / remove the restored files, or restore again with replaceExisting: true.' }).toData())
    }
    return (await this.#records.get(row.id)) ?? row
  }
}

function cancelledBeforeStart () {
  return new CloudPilotError('CANCELLED', 'The restore was cancelled before it started; nothing was written to the target.', { hint: 'Restore again when needed.' }).toData()
}

/** What the backup's manifest (reported by the agent at completion) says about its content. */
function manifestOf (backup: Backup): BackupManifestLike {
  const m = (backup.details as { manifest?: BackupManifestLike } | null)?.manifest
  if (m === undefined || m === null || typeof m !== 'object') return {}
  const out: BackupManifestLike = {}
  if (m.engine === 'mysql' || m.engine === 'postgresql') out.engine = m.engine
  if (Array.isArray(m.databases) && m.databases.every((d) => typeof d === 'string') && m.databases.length > 0) out.databases = m.databases
  if (m.compression === 'gzip' || m.compression === 'zstd' || m.compression === 'none') out.compression = m.compression
  return out
}

function compressionOf (fileName: string): Compression {
  if (fileName.endsWith('.gz')) return 'gzip'
  if (fileName.endsWith('.zst')) return 'zstd'
  return 'none'
}

/** The database part of a plan's source (a database plan's source, or a full plan's `database`). */
function planDatabaseSource (plan: Plan): { engine: DatabaseEngine, databases: string[], host?: string, port?: number, username?: string, socket?: string } | null {
  const src = plan.type === 'full' ? plan.source.database : plan.type === 'database' ? plan.source : null
  if (src === null || typeof src !== 'object') return null
  return src as { engine: DatabaseEngine, databases: string[] }
}

function planPassword (plan: Plan, secrets: SecretBox): string | null {
  if (plan.sourceSecretEnc === null) return null
  return secrets.openJson<{ password?: string }>(plan.sourceSecretEnc).password ?? null
}
