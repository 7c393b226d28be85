import { and, eq, inArray, isNull, lte } from 'drizzle-orm'
import type { Logger } from 'pino'
import {
  CloudPilotError, MINUTE, manifestKey, normaliseErrorData, toErrorData,
  type BackupDeleteFrame, type BackupDeleteResultFrame, type ErrorData,
} from '@cloudpilot/protocol'
import { openDestination } from '@cloudpilot/storage'
import type { Db } from '../db/open-database.ts'
import { backups, destinations, plans, restores, servers, type Backup, type Destination, type Plan } from '../db/schema.ts'
import type { SecretBox } from '../crypto/secret-box.ts'
import type { AgentHub } from '../hub/agent-hub.ts'
import type { ClusterBus } from './cluster-bus.ts'
import type { ReplicaRegistry } from './replica-registry.ts'
import { BackupDeletions, type Copy } from './backup-deletions.ts'
import { decideRetention, deletionReason, type RetentionPolicy } from './retention-policy.ts'
import { destinationSpec } from './job-builder.ts'
import { releaseLease, tryLease } from './leases.ts'

const LEASE = 'retention-sweep'
const PLANS_PER_SWEEP = 500
const DELETIONS_PER_SWEEP = 200

export interface SweepReport {
  /** Backups newly selected for deletion. */
  selected: number
  /** Copies deleted by the coordinator itself (objects in destinations it can reach). */
  deletedByCoordinator: number
  /** backup.delete requests sent to agents (their answers arrive asynchronously). */
  requestedFromAgents: number
  /** Copies marked lost (their server was revoked). */
  lost: number
  /** Attempts that failed; retried on later sweeps, the error is on the row. */
  failed: number
}

export function retentionPolicyOf (plan: Plan): RetentionPolicy {
  return {
    retentionDays: plan.retentionDays,
    keepDaily: plan.keepDaily,
    keepWeekly: plan.keepWeekly,
    keepMonthly: plan.keepMonthly,
    keepYearly: plan.keepYearly,
    timezone: plan.timezone,
  }
}

/**
 * Deletes expired backups (DESIGN §6). Each sweep, on one replica at a time (a lease row):
 *
 * 1. select: per plan with expired completed backups, the policy of services/retention-policy.ts decides which
 *    of its live completed backups go (never the newest); each gets a `deletion` record, copies `pending`;
 * 2. delete: objects in destinations the coordinator reaches (s3 and the other remote types) are deleted here
 *    with their `.manifest.json`; the spool copy and objects of `local` destinations are on the server, so the
 *    agent is asked (backup.delete, through the replica holding it) and its answer marks them; a revoked
 *    server's copies are marked `lost`. A copy that could not be deleted stays pending with `lastError` and is
 *    tried again next sweep. When no copy is pending the row gets `expiredAt`.
 *
 * Status stays `completed` (the vocabulary of DESIGN §3 has no expired status); `expiredAt` and `deletion` say
 * what retention did.
 */
export class RetentionSweeper {
  readonly #db: Db
  readonly #log: Logger
  readonly #secrets: SecretBox
  readonly #hub: AgentHub
  readonly #bus: ClusterBus
  readonly #registry: ReplicaRegistry | null
  readonly #clock: () => Date
  readonly #intervalMs: number
  readonly #allowPrivateEndpoints: boolean
  readonly #holder: string
  readonly deletions: BackupDeletions
  #timer: NodeJS.Timeout | null = null
  #running: Promise<unknown> = Promise.resolve()

  constructor (options: {
    db: Db
    log: Logger
    secrets: SecretBox
    hub: AgentHub
    bus: ClusterBus
    registry: ReplicaRegistry | null
    clock?: () => Date
    intervalMs: number
    allowPrivateEndpoints: boolean
  }) {
    this.#db = options.db
    this.#log = options.log
    this.#secrets = options.secrets
    this.#hub = options.hub
    this.#bus = options.bus
    this.#registry = options.registry
    this.#clock = options.clock ?? (() => new Date())
    this.#intervalMs = options.intervalMs
    this.#allowPrivateEndpoints = options.allowPrivateEndpoints
    this.#holder = options.bus.replicaId
    this.deletions = new BackupDeletions({ db: options.db })
  }

  start (): void {
    this.#timer = setInterval(() => { this.sweep().catch(() => {}) }, this.#intervalMs)
    this.#timer.unref()
  }

  /** One sweep (sweeps of this process run one after the other); null when another replica holds the lease. */
  async sweep (): Promise<SweepReport | null> {
    const run = this.#running.then(async () => await this.#sweepOnce())
    this.#running = run.catch((err: unknown) => { this.#log.error({ err }, 'retention sweep failed') })
    return await run
  }

  async #sweepOnce (): Promise<SweepReport | null> {
    const ttl = Math.max(5 * MINUTE, 3 * this.#intervalMs)
    if (!await tryLease(this.#db, LEASE, this.#holder, ttl)) return null
    try {
      const report: SweepReport = { selected: 0, deletedByCoordinator: 0, requestedFromAgents: 0, lost: 0, failed: 0 }
      await this.#select(report)
      await tryLease(this.#db, LEASE, this.#holder, ttl)
      await this.#progress(report)
      if (report.selected + report.deletedByCoordinator + report.requestedFromAgents + report.lost + report.failed > 0) this.#log.info(report, 'retention sweep')
      return report
    } finally {
      await releaseLease(this.#db, LEASE, this.#holder).catch(() => {})
    }
  }

  async #select (report: SweepReport): Promise<void> {
    const now = this.#clock()
    const due = await this.#db.selectDistinct({ planId: backups.planId }).from(backups)
      .where(and(eq(backups.status, 'completed'), isNull(backups.deletion), lte(backups.expiresAt, now))).limit(PLANS_PER_SWEEP)
    if (due.length === 0) return
    const planRows = await this.#db.select().from(plans).where(inArray(plans.id, due.map((d) => d.planId)))
    for (const plan of planRows) {
      const policy = retentionPolicyOf(plan)
      const live = await this.#db.select().from(backups).where(and(eq(backups.planId, plan.id), eq(backups.status, 'completed'), isNull(backups.deletion)))
      const byId = new Map(live.map((r) => [r.id, r]))
      // A backup being restored right now is not deleted under the restore; a later sweep takes it.
      const restoring = new Set((await this.#db.select({ backupId: restores.backupId }).from(restores)
        .where(and(inArray(restores.backupId, live.map((r) => r.id)), inArray(restores.status, ['pending', 'in_progress'])))).map((r) => r.backupId))
      for (const verdict of decideRetention(live, policy, now)) {
        const row = byId.get(verdict.id)
        if (verdict.keep || row === undefined || restoring.has(row.id)) continue
        if (await this.deletions.select(row, deletionReason(policy), now)) {
          report.selected++
          this.#log.info({ backupId: row.id, planId: plan.id, createdAt: row.createdAt.toISOString(), expiresAt: row.expiresAt?.toISOString() }, 'backup selected for deletion by retention')
        }
      }
    }
  }

  async #destination (id: string | null): Promise<Destination | null> {
    if (id === null) return null
    const [d] = await this.#db.select().from(destinations).where(eq(destinations.id, id))
    return d ?? null
  }

  async #progress (report: SweepReport): Promise<void> {
    for (const row of await this.deletions.pending(DELETIONS_PER_SWEEP)) {
      const deletion = row.deletion
      if (deletion === null) continue
      const now = this.#clock()
      const destination = await this.#destination(row.destinationId)
      let error: ErrorData | null = null
      if (deletion.object === 'pending') {
        if (destination === null || row.objectKey === null) {
          await this.deletions.markCopy(row.id, 'object', 'lost', now)
          report.lost++
        } else if (destination.type !== 'local') {
          try {
            await this.#deleteObject(destination, row.objectKey)
            await this.deletions.markCopy(row.id, 'object', 'deleted', now)
            report.deletedByCoordinator++
          } catch (err) {
            const data = toErrorData(err, 'UNREACHABLE')
            error = { ...data, message: `deleting ${row.objectKey} from destination "${destination.name}": ${data.message}` }
            report.failed++
          }
        }
      }
      const onServer: Copy[] = []
      if (deletion.localCopy === 'pending') onServer.push('localCopy')
      if (deletion.object === 'pending' && destination?.type === 'local') onServer.push('object')
      let askAgent = false
      if (onServer.length > 0) {
        const [server] = await this.#db.select({ revokedAt: servers.revokedAt }).from(servers).where(eq(servers.id, row.serverId))
        if (server === undefined || server.revokedAt !== null) {
          // Nobody can reach those files any more: recorded as lost rather than retried forever.
          for (const copy of onServer) await this.deletions.markCopy(row.id, copy, 'lost', now)
          report.lost += onServer.length
          this.#log.warn({ backupId: row.id, copies: onServer }, 'retention: the server was revoked, its copies are marked lost')
        } else {
          askAgent = true
        }
      }
      // The attempt is counted before the agent is asked, so that its answer (which may come back at once, on
      // any replica) is never overwritten.
      await this.deletions.attempt(row.id, now, error)
      if (askAgent) {
        if (await this.#askAgent(row, destination)) {
          report.requestedFromAgents++
        } else {
          await this.deletions.error(row.id, new CloudPilotError('AGENT_UNREACHABLE', 'the server\'s agent is not connected: its copies are deleted when it is back (retried every sweep)').toData())
          report.failed++
        }
      }
    }
  }

  async #deleteObject (destination: Destination, objectKey: string): Promise<void> {
    const driver = await openDestination(destinationSpec(destination, this.#secrets), { allowPrivateEndpoints: this.#allowPrivateEndpoints })
    try {
      // The manifest first: an object without its manifest is still a usable archive, the reverse is not.
      await driver.delete(manifestKey(objectKey))
      await driver.delete(objectKey)
    } finally {
      await driver.close().catch(() => {})
    }
  }

  #frameFor (row: Backup, destination: Destination | null): BackupDeleteFrame | null {
    const deletion = row.deletion
    if (deletion === null) return null
    const localPath = deletion.localCopy === 'pending' ? row.localPath : null
    const objectOnServer = deletion.object === 'pending' && destination?.type === 'local' && row.objectKey !== null
    if (localPath === null && !objectOnServer) return null
    return {
      type: 'backup.delete',
      id: `del-${row.id}`,
      backupId: row.id,
      localPath,
      objectKey: objectOnServer ? row.objectKey : null,
      destination: objectOnServer && destination !== null ? destinationSpec(destination, this.#secrets, this.#allowPrivateEndpoints) : null,
    }
  }

  /** Sends backup.delete to the agent here, or through the replica holding it; false when it is connected nowhere. */
  async #askAgent (row: Backup, destination: Destination | null): Promise<boolean> {
    const frame = this.#frameFor(row, destination)
    if (frame === null) return true
    if (this.#hub.send(row.serverId, frame)) return true
    const holder = this.#registry === null ? null : await this.#registry.replicaHolding(row.serverId)
    if (holder === null) return false
    await this.#bus.send(holder, { kind: 'backup.delete', backupId: row.id })
    return true
  }

  /** backup.delete forwarded by the replica that swept: this one holds the agent. */
  async deleteForwarded (backupId: string): Promise<void> {
    const [row] = await this.#db.select().from(backups).where(eq(backups.id, backupId))
    if (row === undefined || row.deletion === null || row.expiredAt !== null) return
    const frame = this.#frameFor(row, await this.#destination(row.destinationId))
    if (frame !== null && !this.#hub.send(row.serverId, frame)) {
      await this.deletions.error(row.id, new CloudPilotError('AGENT_UNREACHABLE', 'the agent disconnected before it could be asked to delete its copies (retried every sweep)').toData())
    }
  }

  /** The agent's answer to backup.delete (only for its own server's backups). */
  async applyAgentResult (serverId: string, frame: BackupDeleteResultFrame): Promise<void> {
    const [row] = await this.#db.select({ serverId: backups.serverId, deletion: backups.deletion }).from(backups).where(eq(backups.id, frame.backupId))
    if (row === undefined || row.serverId !== serverId || row.deletion === null) return
    const now = this.#clock()
    for (const copy of ['localCopy', 'object'] as const) {
      const outcome = frame[copy]
      if (outcome === null) continue
      if (outcome.ok) {
        await this.deletions.markCopy(frame.backupId, copy, 'deleted', now)
      } else {
        const error = outcome.error === undefined ? new CloudPilotError('INTERNAL', 'the agent could not delete the copy').toData() : normaliseErrorData(outcome.error)
        await this.deletions.error(frame.backupId, { ...error, message: `${copy === 'localCopy' ? 'spool copy' : 'object'} on the server: ${error.message}` })
        this.#log.warn({ backupId: frame.backupId, copy, code: error.code }, 'the agent could not delete a copy; retried next sweep')
      }
    }
  }

  /** The agent answered a backup.delete with an error frame (it cannot handle it): recorded on the deletion. */
  async agentRefused (serverId: string, backupId: string, reason: string): Promise<void> {
    if (!/^[0-9a-f-]{36}$/.test(backupId)) return
    const [row] = await this.#db.select({ serverId: backups.serverId }).from(backups).where(eq(backups.id, backupId))
    if (row?.serverId !== serverId) return
    await this.deletions.error(backupId, new CloudPilotError('UNSUPPORTED', `the agent could not take the request to delete its copies (${reason})`).toData())
  }

  async stop (): Promise<void> {
    if (this.#timer !== null) clearInterval(this.#timer)
    await this.#running
  }
}
