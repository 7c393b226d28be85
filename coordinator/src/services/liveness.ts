import { and, eq, inArray, lt, or, isNull, sql } from 'drizzle-orm'
import type { Logger } from 'pino'
import { CloudPilotError } from '@cloudpilot/protocol'
import type { Db } from '../db/open-database.ts'
import { servers } from '../db/schema.ts'
import type { AgentHub } from '../hub/agent-hub.ts'
import type { AgentSession } from '../hub/agent-session.ts'
import type { BackupRecords } from './backup-records.ts'
import type { RestoreRecords } from './restore-records.ts'

/** Sessions written per statement by the flusher. */
const FLUSH_CHUNK = 2000
/** The flusher runs this often at most (and at least twice per heartbeat interval): small batches, no bursts. */
const FLUSH_EVERY_MS = 1000

/**
 * Server liveness. Heartbeats update sessions in memory; a flusher writes last_seen_at (and health) in one
 * batched statement; a sweeper marks servers `offline` after 3 missed heartbeat intervals and fails their
 * open backups with AGENT_LOST, and fails pending rows that never started with MISSED. It works from the
 * database, so with several replicas any of them can sweep.
 */
export class Liveness {
  readonly #db: Db
  readonly #hub: AgentHub
  readonly #records: BackupRecords
  readonly #restores: RestoreRecords | null
  readonly #log: Logger
  readonly #intervalMs: number
  readonly #startTimeoutMs: number
  readonly #startupGraceMs: number
  #flushTimer: NodeJS.Timeout | null = null
  #sweepTimer: NodeJS.Timeout | null = null
  #running: Promise<void> = Promise.resolve()
  readonly #startedAt = Date.now()

  constructor (options: { db: Db, hub: AgentHub, records: BackupRecords, restores?: RestoreRecords, log: Logger, heartbeatIntervalMs: number, startTimeoutMs: number, startupGraceMs: number }) {
    this.#startupGraceMs = options.startupGraceMs
    this.#db = options.db
    this.#hub = options.hub
    this.#records = options.records
    this.#restores = options.restores ?? null
    this.#log = options.log
    this.#intervalMs = options.heartbeatIntervalMs
    this.#startTimeoutMs = options.startTimeoutMs
  }

  start (): void {
    const flushEvery = Math.max(50, Math.min(FLUSH_EVERY_MS, Math.floor(this.#intervalMs / 2)))
    this.#flushTimer = setInterval(() => this.#serial(() => this.flush()), flushEvery)
    this.#sweepTimer = setInterval(() => this.#serial(() => this.sweep()), Math.max(100, this.#intervalMs))
    this.#flushTimer.unref()
    this.#sweepTimer.unref()
  }

  #serial (task: () => Promise<unknown>): void {
    this.#running = this.#running.then(task).then(() => {}, (err: unknown) => { this.#log.error({ err }, 'liveness task failed') })
  }

  /** Marks a server online right away (on hello). */
  async markOnline (serverId: string): Promise<void> {
    await this.#db.update(servers).set({ status: 'online', lastSeenAt: new Date() }).where(eq(servers.id, serverId))
  }

  /**
   * Writes last_seen_at and health of every session that heard from its agent since the last flush: one
   * statement per FLUSH_CHUNK sessions, the rows passed as a single JSON parameter (building a statement with
   * thousands of bound values cost the event loop tens of milliseconds at 10,000 agents).
   */
  async flush (): Promise<void> {
    const dirty: AgentSession[] = []
    for (const s of this.#hub.sessions()) if (s.ready && s.dirty) dirty.push(s)
    if (dirty.length === 0) return
    for (const s of dirty) s.dirty = false
    for (let i = 0; i < dirty.length; i += FLUSH_CHUNK) {
      const rows = dirty.slice(i, i + FLUSH_CHUNK).map((s) => ({ id: s.serverId, seen: new Date(s.lastSeenAt).toISOString(), health: s.health }))
      try {
        await this.#db.execute(sql`update servers set last_seen_at = v.seen, status = 'online', health = coalesce(v.health, servers.health)
          from jsonb_to_recordset(${JSON.stringify(rows)}::jsonb) as v(id uuid, seen timestamptz, health jsonb)
          where servers.id = v.id and servers.revoked_at is null`)
      } catch (err) {
        // Not written: try again at the next flush (a newer heartbeat may have come meanwhile; either is fine).
        for (const s of dirty.slice(i)) s.dirty = true
        throw err
      }
    }
  }

  /** Offline detection (3 missed intervals) and MISSED detection. */
  async sweep (): Promise<void> {
    const cutoff = new Date(Date.now() - 3 * this.#intervalMs)
    // While this process was down it heard no heartbeats: give agents time to reconnect (their backoff is capped
    // at 60 s) before calling them offline, so a coordinator restart does not fail every running backup.
    if (Date.now() - this.#startedAt < this.#startupGraceMs) return
    const gone = await this.#db.update(servers).set({ status: 'offline' })
      .where(and(eq(servers.status, 'online'), or(isNull(servers.lastSeenAt), lt(servers.lastSeenAt, cutoff))))
      .returning({ id: servers.id })
    const ids = gone.map((g) => g.id).filter((id) => {
      const s = this.#hub.get(id)
      // A live local session that is merely behind on flushing is not offline.
      return s === undefined || s.lastSeenAt < cutoff.getTime()
    })
    const revived = gone.map((g) => g.id).filter((id) => !ids.includes(id))
    if (revived.length > 0) await this.#db.update(servers).set({ status: 'online' }).where(inArray(servers.id, revived))
    if (ids.length > 0) {
      for (const id of ids) this.#hub.get(id)?.socket.terminate()
      const lost = new CloudPilotError('AGENT_LOST', `no heartbeat from the agent for ${Math.round(3 * this.#intervalMs / 1000)} s (3 intervals): it stopped or lost its connection while the job was pending or running`).toData()
      const failed = await this.#records.failOpenOfServers(ids, lost)
      const failedRestores = await this.#restores?.failOpenOfServers(ids, lost) ?? []
      this.#log.warn({ servers: ids, failedBackups: failed, failedRestores }, 'servers went offline')
    }
    const missed = new CloudPilotError('MISSED', `the agent did not start the job within ${Math.round(this.#startTimeoutMs / 1000)} s`).toData()
    const stale = await this.#records.failStalePending(new Date(Date.now() - this.#startTimeoutMs), missed)
    if (stale.length > 0) this.#log.warn({ backups: stale }, 'jobs never started: failed as MISSED')
    const staleRestores = await this.#restores?.failStalePending(new Date(Date.now() - this.#startTimeoutMs), missed) ?? []
    if (staleRestores.length > 0) this.#log.warn({ restores: staleRestores }, 'restores never started: failed as MISSED')
  }

  async stop (): Promise<void> {
    if (this.#flushTimer !== null) clearInterval(this.#flushTimer)
    if (this.#sweepTimer !== null) clearInterval(this.#sweepTimer)
    await this.#running
    await this.flush().catch(() => {})
  }
}
