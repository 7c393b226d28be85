import { randomUUID } from 'node:crypto'
import os from 'node:os'
import { and, eq, inArray, lt, max, sql } from 'drizzle-orm'
import type { Logger } from 'pino'
import { DAY, SECOND } from '@cloudpilot/protocol'
import type { Db } from '../db/open-database.ts'
import { coordinatorReplicas, servers } from '../db/schema.ts'

/** Replicas not heard of for this many beats are considered dead. */
const DEAD_AFTER_BEATS = 3
/** Disconnections are written together after this delay: one statement, not one per socket, when many drop at once. */
const RELEASE_BATCH_MS = 50
/** Host and database clocks further apart than this get a warning: schedules and expiry use the host clock. */
const CLOCK_SKEW_WARNING_MS = 5 * SECOND

/**
 * This coordinator process as one replica among those sharing the database: a row in coordinator_replicas with
 * a `seen_at` beat. Other replicas use it to know whether a forwarded command can reach this one, and the
 * scheduler uses the beats of the past to know since when no coordinator ran at all (missed slots).
 */
export class ReplicaRegistry {
  readonly id = randomUUID()
  readonly beatMs: number
  readonly #db: Db
  readonly #log: Logger
  #timer: NodeJS.Timeout | null = null
  /** Servers whose agent left this replica, not yet written; and the write they wait for. */
  #releasing = new Set<string>()
  #releaseBatch: Promise<void> | null = null
  /** The last beat of any replica before this one started; null on the very first start. */
  previousSeenAt: Date | null = null

  constructor (options: { db: Db, log: Logger, beatMs: number }) {
    this.#db = options.db
    this.#log = options.log
    this.beatMs = options.beatMs
  }

  async start (): Promise<void> {
    const [last] = await this.#db.select({ at: max(coordinatorReplicas.seenAt) }).from(coordinatorReplicas)
    this.previousSeenAt = last?.at ?? null
    const now = new Date()
    await this.#db.insert(coordinatorReplicas).values({ id: this.id, hostname: os.hostname(), pid: process.pid, startedAt: now, seenAt: now })
    await this.#db.delete(coordinatorReplicas).where(lt(coordinatorReplicas.seenAt, new Date(Date.now() - 7 * DAY)))
    await this.#checkClock()
    this.#timer = setInterval(() => { this.beat().catch((err: unknown) => this.#log.warn({ err }, 'replica beat failed')) }, this.beatMs)
    this.#timer.unref()
  }

  async beat (): Promise<void> {
    await this.#db.update(coordinatorReplicas).set({ seenAt: new Date() }).where(eq(coordinatorReplicas.id, this.id))
  }

  async #checkClock (): Promise<void> {
    const result = await this.#db.execute(sql`select now() as now`)
    const rows = (Array.isArray(result) ? result : (result as { rows?: unknown[] }).rows ?? []) as Array<{ now: Date | string }>
    const dbNow = rows[0]?.now
    if (dbNow === undefined) return
    const skew = Date.now() - new Date(dbNow).getTime()
    if (Math.abs(skew) > CLOCK_SKEW_WARNING_MS) {
      this.#log.warn({ skewMs: skew }, 'the host clock and the database clock disagree: schedules and retention use the host clock, keep it synchronised (NTP)')
    }
  }

  /**
   * Another live replica that holds the agent of `serverId`, or null (held here, by a dead replica, or nobody).
   */
  async replicaHolding (serverId: string): Promise<string | null> {
    const [row] = await this.#db.select({ replica: servers.connectedReplica, seenAt: coordinatorReplicas.seenAt, stoppedAt: coordinatorReplicas.stoppedAt })
      .from(servers).leftJoin(coordinatorReplicas, eq(coordinatorReplicas.id, servers.connectedReplica))
      .where(and(eq(servers.id, serverId)))
    if (row?.replica == null || row.replica === this.id || row.seenAt == null || row.stoppedAt != null) return null
    return row.seenAt.getTime() > Date.now() - DEAD_AFTER_BEATS * this.beatMs ? row.replica : null
  }

  /** For many servers at once: server id -> the other live replica holding its agent (absent: none). */
  async replicasHolding (serverIds: string[]): Promise<Map<string, string>> {
    const out = new Map<string, string>()
    if (serverIds.length === 0) return out
    const alive = Date.now() - DEAD_AFTER_BEATS * this.beatMs
    const rows = await this.#db.select({ serverId: servers.id, replica: servers.connectedReplica, seenAt: coordinatorReplicas.seenAt, stoppedAt: coordinatorReplicas.stoppedAt })
      .from(servers).innerJoin(coordinatorReplicas, eq(coordinatorReplicas.id, servers.connectedReplica))
      .where(inArray(servers.id, serverIds))
    for (const r of rows) {
      if (r.replica !== null && r.replica !== this.id && r.stoppedAt === null && r.seenAt.getTime() > alive) out.set(r.serverId, r.replica)
    }
    return out
  }

  /** The agent of `serverId` connected to this replica. */
  async claim (serverId: string): Promise<void> {
    await this.#db.update(servers).set({ connectedReplica: this.id }).where(eq(servers.id, serverId))
  }

  /**
   * The agent of `serverId` left this replica (no-op when it is already held by another). Written in a batch
   * with the other disconnections of the next RELEASE_BATCH_MS: a network failure that drops 10,000 agents
   * costs one statement, not 10,000.
   */
  async release (serverId: string): Promise<void> {
    this.#releasing.add(serverId)
    this.#releaseBatch ??= new Promise<void>((resolve) => setTimeout(resolve, RELEASE_BATCH_MS).unref()).then(async () => {
      const ids = [...this.#releasing]
      this.#releasing = new Set()
      this.#releaseBatch = null
      if (ids.length === 0) return
      await this.#db.update(servers).set({ connectedReplica: null }).where(and(inArray(servers.id, ids), eq(servers.connectedReplica, this.id)))
    })
    await this.#releaseBatch
  }

  /** The agent of `serverId` is back on this replica before its disconnection was written: do not write it. */
  cancelRelease (serverId: string): void {
    this.#releasing.delete(serverId)
  }

  async stop (): Promise<void> {
    if (this.#timer !== null) clearInterval(this.#timer)
    await this.#releaseBatch?.catch(() => {})
    const now = new Date()
    await this.#db.update(coordinatorReplicas).set({ seenAt: now, stoppedAt: now }).where(eq(coordinatorReplicas.id, this.id)).catch(() => {})
    await this.#db.update(servers).set({ connectedReplica: null }).where(eq(servers.connectedReplica, this.id)).catch(() => {})
  }
}
