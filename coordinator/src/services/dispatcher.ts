import { randomUUID } from 'node:crypto'
import { and, eq, inArray, isNull } from 'drizzle-orm'
import type { Logger } from 'pino'
import {
  CloudPilotError, archiveExtension, backupObjectKey, isCancellable, type ErrorData, type Trigger,
} from '@cloudpilot/protocol'
import type { Db } from '../db/open-database.ts'
import { backups, destinations, plans, type Backup, type Destination, type Plan } from '../db/schema.ts'
import type { SecretBox } from '../crypto/secret-box.ts'
import type { AgentHub } from '../hub/agent-hub.ts'
import type { BackupRecords } from './backup-records.ts'
import { buildBackupJob } from './job-builder.ts'
import type { ClusterBus } from './cluster-bus.ts'
import type { ReplicaRegistry } from './replica-registry.ts'

/** Rows per multi-row insert, and job ids per NOTIFY (a payload stays far below PostgreSQL's 8000 bytes). */
const INSERT_CHUNK = 1000
const FORWARD_CHUNK = 100

/** With several replicas: where agents connected to other replicas are, and how to reach them. */
export interface Forwarding {
  registry: ReplicaRegistry
  bus: ClusterBus
}

/** Creates backup rows for plan runs and sends the jobs to the agents; handles cancel requests. */
export class Dispatcher {
  readonly #db: Db
  readonly #hub: AgentHub
  readonly #records: BackupRecords
  readonly #secrets: SecretBox
  readonly #log: Logger
  readonly #allowPrivateEndpoints: boolean
  readonly #forwarding: Forwarding | null

  constructor (options: { db: Db, hub: AgentHub, records: BackupRecords, secrets: SecretBox, log: Logger, allowPrivateEndpoints: boolean, forwarding?: Forwarding | null }) {
    this.#allowPrivateEndpoints = options.allowPrivateEndpoints
    this.#forwarding = options.forwarding ?? null
    this.#db = options.db
    this.#hub = options.hub
    this.#records = options.records
    this.#secrets = options.secrets
    this.#log = options.log
  }

  async #destinationOf (plan: Plan): Promise<Destination | null> {
    if (plan.destinationId === null) return null
    const [d] = await this.#db.select().from(destinations).where(eq(destinations.id, plan.destinationId))
    return d ?? null
  }

  /**
   * Runs a plan now: inserts a `pending` row and sends job.run to the server's agent. When the agent is not
   * connected the row is failed at once with AGENT_LOST (a missed run is a failure, never a silent gap).
   * With `scheduledFor`, the unique (plan_id, scheduled_for) index makes a slot run once across replicas:
   * returns null when another replica already took the slot.
   */
  async runPlan (plan: Plan, options: { trigger: Trigger, scheduledFor?: Date | null }): Promise<Backup | null> {
    if (plan.billingStatus !== 'active') throw new CloudPilotError('BILLING_INACTIVE', `plan billing status is ${plan.billingStatus}`)
    const destination = await this.#destinationOf(plan)
    if (destination !== null && !destination.active) {
      throw new CloudPilotError('DESTINATION_INACTIVE', `destination "${destination.name}" is inactive`)
    }
    const [row] = await this.#insertRows([{ plan, trigger: options.trigger, scheduledFor: options.scheduledFor ?? null, status: 'pending' }])
    if (row === undefined) return null
    const [sent] = await this.#dispatchMany([{ row, plan, destination }])
    // Sent: the row as created (pending), whatever the agent may already have reported meanwhile; not sent: as failed.
    return sent === true ? row : (await this.#records.get(row.id)) ?? row
  }

  /**
   * The runs of one schedule slot for many plans at once (a burst of plans due together costs a few statements,
   * not a few per plan): one multi-row insert where the unique (plan_id, scheduled_for) index lets through only
   * the slots no replica has taken, then job.run to the agents, here or through their replicas. Per plan: the
   * row it got, `taken` (another replica has the slot), or a failed row when it cannot start (destination
   * inactive). Billing is the caller's to check.
   */
  async runScheduled (due: Plan[], slot: Date): Promise<Map<string, { outcome: 'dispatched' | 'taken' | 'failed', row?: Backup }>> {
    const result = new Map<string, { outcome: 'dispatched' | 'taken' | 'failed', row?: Backup }>()
    const destinationIds = [...new Set(due.map((p) => p.destinationId).filter((id): id is string => id !== null))]
    const found = destinationIds.length === 0 ? [] : await this.#db.select().from(destinations).where(inArray(destinations.id, destinationIds))
    const destinationById = new Map(found.map((d) => [d.id, d]))
    const runnable: Plan[] = []
    for (const plan of due) {
      const destination = plan.destinationId === null ? null : destinationById.get(plan.destinationId) ?? null
      if (destination !== null && !destination.active) {
        const error = new CloudPilotError('DESTINATION_INACTIVE', `destination "${destination.name}" is inactive`).toData()
        const row = await this.recordSlot(plan, slot, { status: 'failed', error })
        result.set(plan.id, row === null ? { outcome: 'taken' } : { outcome: 'failed', row })
        continue
      }
      runnable.push(plan)
    }
    const rows = await this.#insertRows(runnable.map((plan) => ({ plan, trigger: 'scheduled' as const, scheduledFor: slot, status: 'pending' as const })))
    const planById = new Map(runnable.map((p) => [p.id, p]))
    for (const plan of runnable) result.set(plan.id, { outcome: 'taken' })
    for (const row of rows) result.set(row.planId, { outcome: 'dispatched', row })
    await this.#dispatchMany(rows.map((row) => {
      const plan = planById.get(row.planId) as Plan
      return { row, plan, destination: plan.destinationId === null ? null : destinationById.get(plan.destinationId) ?? null }
    }))
    return result
  }

  /**
   * Records a schedule slot that does not run as a finished row: `failed` (MISSED, or why it could not start)
   * or `cancelled` (SKIPPED_OVERLAP). Null when the slot already has a row (another replica recorded or ran it).
   */
  async recordSlot (plan: Plan, scheduledFor: Date, outcome: { status: 'failed' | 'cancelled', error: ErrorData }): Promise<Backup | null> {
    return (await this.recordSlots(plan, [{ scheduledFor, ...outcome }]))[0] ?? null
  }

  /** Several finished slot rows of one plan in one statement; returns those inserted (the others had rows). */
  async recordSlots (plan: Plan, slots: Array<{ scheduledFor: Date, status: 'failed' | 'cancelled', error: ErrorData }>): Promise<Backup[]> {
    const finishedAt = new Date()
    return await this.#insertRows(slots.map((s) => ({ plan, trigger: 'scheduled' as const, scheduledFor: s.scheduledFor, status: s.status, error: s.error, finishedAt })))
  }

  async #insertRows (rows: Array<{ plan: Plan, trigger: Trigger, scheduledFor: Date | null, status: Backup['status'], error?: ErrorData, finishedAt?: Date }>): Promise<Backup[]> {
    const out: Backup[] = []
    for (let i = 0; i < rows.length; i += INSERT_CHUNK) {
      const createdAt = new Date()
      const values = rows.slice(i, i + INSERT_CHUNK).map(({ plan, ...v }) => ({
        id: randomUUID(),
        planId: plan.id,
        serverId: plan.serverId,
        workspaceId: plan.workspaceId,
        destinationId: plan.destinationId,
        type: plan.type,
        trigger: v.trigger,
        status: v.status,
        error: v.error ?? null,
        fileName: fileNameFor(plan.name, createdAt, archiveExtension(plan.type, plan.compression, plan.encryption != null)),
        scheduledFor: v.scheduledFor,
        createdAt,
        finishedAt: v.finishedAt ?? null,
      }))
      out.push(...await this.#db.insert(backups).values(values).onConflictDoNothing().returning())
    }
    return out
  }

  objectKeyOf (row: Backup): string {
    const extension = row.fileName.slice(row.fileName.indexOf('.'))
    return backupObjectKey({ serverId: row.serverId, planId: row.planId, backupId: row.id, createdAt: row.createdAt, extension })
  }

  /**
   * Sends job.run for a pending row: to the agent when it is connected here, else through the replica that holds
   * it (PostgreSQL NOTIFY, ids only). Connected nowhere: the row fails with AGENT_LOST.
   */
  async dispatch (row: Backup, plan?: Plan, destination?: Destination | null): Promise<boolean> {
    const p = plan ?? (await this.#db.select().from(plans).where(eq(plans.id, row.planId)))[0]
    if (p === undefined) throw new Error(`plan ${row.planId} of backup ${row.id} is gone`)
    const [sent] = await this.#dispatchMany([{ row, plan: p, destination }])
    return sent ?? false
  }

  /**
   * job.run for pending rows: sent to the agents connected here; for the others one query finds the replicas
   * holding them and one NOTIFY per replica (and 100 jobs) carries the ids; rows of agents connected nowhere fail
   * with AGENT_LOST in one statement. `forwarded`: these came from another replica, do not forward again.
   * Returns, per item, whether the job went out (here or to another replica).
   */
  async #dispatchMany (items: Array<{ row: Backup, plan: Plan, destination?: Destination | null }>, options: { forwarded?: boolean } = {}): Promise<boolean[]> {
    const sent = items.map(() => false)
    const away: number[] = []
    const dropped: string[] = []
    for (const [i, { row, plan, destination }] of items.entries()) {
      const session = this.#hub.get(row.serverId)
      if (session === undefined) {
        away.push(i)
        continue
      }
      const d = destination === undefined ? await this.#destinationOf(plan) : destination
      const job = buildBackupJob(row, plan, d, this.#secrets, this.objectKeyOf(row), this.#allowPrivateEndpoints)
      if (session.send({ type: 'job.run', id: `run-${row.id}`, job })) {
        sent[i] = true
        this.#log.info({ backupId: row.id, planId: row.planId, serverId: row.serverId }, 'job dispatched')
      } else {
        dropped.push(row.id)
      }
    }
    const holders = options.forwarded === true || this.#forwarding === null || away.length === 0
      ? new Map<string, string>()
      : await this.#forwarding.registry.replicasHolding([...new Set(away.map((i) => (items[i] as { row: Backup }).row.serverId))])
    const byReplica = new Map<string, string[]>()
    const offline: string[] = []
    for (const i of away) {
      const row = (items[i] as { row: Backup }).row
      const holder = holders.get(row.serverId)
      if (holder === undefined) {
        offline.push(row.id)
        continue
      }
      byReplica.set(holder, [...(byReplica.get(holder) ?? []), row.id])
      sent[i] = true
    }
    for (const [replica, ids] of byReplica) {
      for (let i = 0; i < ids.length; i += FORWARD_CHUNK) {
        await (this.#forwarding as Forwarding).bus.send(replica, { kind: 'job.run', backupIds: ids.slice(i, i + FORWARD_CHUNK) })
      }
      this.#log.info({ replica, backupIds: ids.length <= 10 ? ids : undefined, jobs: ids.length }, 'jobs forwarded to the replica holding their agents')
    }
    const message = options.forwarded === true
      ? 'the agent disconnected from its coordinator replica before the job could be sent'
      : 'the server\'s agent is offline, so the backup could not start'
    await this.#records.failOpen(offline, new CloudPilotError('AGENT_LOST', message).toData())
    await this.#records.failOpen(dropped, new CloudPilotError('AGENT_LOST', 'the connection to the agent dropped while sending the job').toData())
    return sent
  }

  async #replicaHolding (serverId: string): Promise<string | null> {
    return this.#forwarding === null ? null : await this.#forwarding.registry.replicaHolding(serverId)
  }

  /** job.run forwarded by another replica: this one holds (or held) the agents. */
  async dispatchForwarded (backupIds: string[]): Promise<void> {
    const rows = await this.#db.select({ row: backups, plan: plans }).from(backups).innerJoin(plans, eq(plans.id, backups.planId))
      .where(and(inArray(backups.id, backupIds), eq(backups.status, 'pending')))
    await this.#dispatchMany(rows.map(({ row, plan }) => ({ row, plan })), { forwarded: true })
  }

  /** job.cancel forwarded by another replica: tell the agent; if it is gone, the row is cancelled at once. */
  async cancelForwarded (backupId: string): Promise<void> {
    const row = await this.#records.get(backupId)
    if (row === undefined || !isCancellable(row.status)) return
    if (!this.#hub.send(row.serverId, { type: 'job.cancel', jobId: row.id })) await this.#records.markCancelled(row.id, ['pending', 'in_progress'])
  }

  /** After an agent (re)connects: re-send pending jobs it is not running, and cancellations it missed. */
  async redispatch (serverId: string, runningJobs: string[]): Promise<void> {
    const running = new Set(runningJobs)
    for (const row of await this.#records.pendingOfServer(serverId)) {
      if (running.has(row.id)) continue
      if (row.cancelRequestedAt !== null) {
        await this.#records.markCancelled(row.id, ['pending'])
        continue
      }
      await this.dispatch(row)
    }
  }

  /**
   * Cancel: a pending row not yet started is cancelled at once (and the agent told, in case job.run is in
   * flight); an in_progress row gets job.cancel and becomes `cancelled` when the agent confirms it stopped.
   * With the agent offline the row is cancelled at once; the agent aborts the job when it reconnects.
   */
  async cancel (row: Backup): Promise<Backup> {
    if (!isCancellable(row.status)) throw new CloudPilotError('NOT_CANCELLABLE', `backup is ${row.status}`)
    await this.#records.requestCancel(row.id)
    let sent = this.#hub.send(row.serverId, { type: 'job.cancel', jobId: row.id })
    if (!sent) {
      const holder = await this.#replicaHolding(row.serverId)
      if (holder !== null && this.#forwarding !== null) {
        await this.#forwarding.bus.send(holder, { kind: 'job.cancel', backupId: row.id })
        sent = true
      }
    }
    if (row.status === 'pending' || !sent) await this.#records.markCancelled(row.id, row.status === 'pending' ? ['pending'] : ['pending', 'in_progress'])
    return (await this.#records.get(row.id)) ?? row
  }

  /** Plans of a server that are not deleted (for tests and listings). */
  async plansOfServer (serverId: string): Promise<Plan[]> {
    return await this.#db.select().from(plans).where(and(eq(plans.serverId, serverId), isNull(plans.deletedAt)))
  }
}

function fileNameFor (planName: string, at: Date, extension: string): string {
  const slug = planName.normalize('NFKD').replace(/[^\w-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 60).toLowerCase() || 'backup'
  const stamp = at.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z').replace('T', '-')
  return `${slug}-${stamp}${extension}`
}
