import cron, { type ScheduledTask } from 'node-cron'
import { and, eq, inArray, isNotNull, isNull, ne, or } from 'drizzle-orm'
import type { Logger } from 'pino'
import { CloudPilotError } from '@cloudpilot/protocol'
import type { Db } from '../db/open-database.ts'
import { backups, plans, servers, type Plan } from '../db/schema.ts'
import type { Dispatcher } from './dispatcher.ts'
import type { ClusterBus } from './cluster-bus.ts'
import { SlotMatcher, hasSeconds } from './cron-slots.ts'

/** What one slot came to (returned for tests and logs). */
export type SlotOutcome =
  | 'dispatched' // a pending row was inserted and the job sent (or the row failed AGENT_LOST at once)
  | 'taken' // the slot already had a row: another replica (or an earlier call) took it
  | 'skipped-overlap' // a cancelled SKIPPED_OVERLAP row: the previous run of the plan was still going
  | 'failed' // a failed row: the run could not start (e.g. DESTINATION_INACTIVE) or the slot was MISSED
  | 'billing-inactive' // no row: plans whose billing is not active do not fire
  | 'not-scheduled' // no row: the plan is gone, unscheduled, or its schedule changed meanwhile

/** Slots recorded one by one after an outage, per plan; older ones are summed up in the oldest row's message. */
const MAX_MISSED_ROWS_PER_PLAN = 100
/** Calls of `fire` for one slot arriving within this window are handled together. */
const FIRE_BATCH_MS = 20
/** Plans per statement when a burst is handled. */
const FIRE_CHUNK = 1000

interface Batch {
  waiters: Map<string, Array<{ resolve: (o: SlotOutcome) => void, reject: (err: unknown) => void }>>
}

interface Entry {
  expression: string
  timezone: string
  task: ScheduledTask
}

export interface SchedulerOptions {
  db: Db
  dispatcher: Dispatcher
  bus: ClusterBus
  log: Logger
  /** The time; injectable so tests can drive catch-up and expiry without waiting. */
  clock?: () => Date
  /** Start a node-cron task per scheduled plan (default). Off in tests that drive `fire` and `catchUp` directly. */
  timers?: boolean
  resyncMs: number
  lateGraceMs: number
  lookbackMs: number
  /** 6-field (seconds) schedules are honoured only when this is set (CLOUDPILOT_SCHEDULE_SECONDS, tests). */
  allowSeconds?: boolean
}

/**
 * Fires plans on their cron schedule (node-cron, one task per plan, in the plan's timezone) on every replica.
 * A slot becomes at most one history row whatever the number of replicas: the unique (plan_id, scheduled_for)
 * index decides, the losers insert nothing. Each firing re-reads the plan, so billing and overlap are judged on
 * the current state:
 *
 * - billing not `active`: no row;
 * - a pending/in_progress backup of the plan still open: a `cancelled` row with error SKIPPED_OVERLAP (nothing
 *   failed and nothing was stacked; the running backup continues);
 * - otherwise a `pending` row, dispatched like a manual run (agent offline: `failed` AGENT_LOST at once; a job
 *   that never starts: `failed` MISSED by liveness); a run that cannot start (destination inactive): `failed`.
 *
 * Slots that passed while no coordinator ran at all are found at start from the replicas' beats: the newest, if
 * it is at most `lateGraceMs` late, still runs; the others (up to `lookbackMs` back) become `failed` MISSED rows.
 * Plans created, changed or deleted through the API take effect at once on the replica that served the call
 * and through NOTIFY on the others, with a periodic full re-read as a safety net.
 */
export class Scheduler {
  readonly #db: Db
  readonly #dispatcher: Dispatcher
  readonly #bus: ClusterBus
  readonly #log: Logger
  readonly #clock: () => Date
  readonly #timers: boolean
  readonly #resyncMs: number
  readonly #lateGraceMs: number
  readonly #lookbackMs: number
  readonly #allowSeconds: boolean
  readonly #entries = new Map<string, Entry>()
  readonly #inFlight = new Set<Promise<unknown>>()
  readonly #batches = new Map<number, Batch>()
  #resyncTimer: NodeJS.Timeout | null = null
  #stopped = false
  #resyncing: Promise<void> | null = null

  constructor (options: SchedulerOptions) {
    this.#db = options.db
    this.#dispatcher = options.dispatcher
    this.#bus = options.bus
    this.#log = options.log
    this.#clock = options.clock ?? (() => new Date())
    this.#timers = options.timers ?? true
    this.#resyncMs = options.resyncMs
    this.#lateGraceMs = options.lateGraceMs
    this.#lookbackMs = options.lookbackMs
    this.#allowSeconds = options.allowSeconds ?? false
  }

  /** Loads every scheduled plan, records what was missed since `previousSeenAt`, and keeps in step with changes. */
  async start (options: { previousSeenAt: Date | null }): Promise<void> {
    this.#bus.onPlanChanged((planId) => { this.#track(this.reload(planId)) })
    this.#bus.onReconnected(() => { this.#track(this.resync()) })
    await this.resync()
    this.#log.info({ plans: this.#entries.size }, 'scheduler started')
    await this.catchUp(options.previousSeenAt)
    this.#resyncTimer = setInterval(() => { this.#track(this.resync()) }, this.#resyncMs)
    this.#resyncTimer.unref()
  }

  /** Plan ids with a live schedule on this replica, with their expression (for tests and diagnostics). */
  scheduled (): Map<string, { expression: string, timezone: string }> {
    return new Map([...this.#entries].map(([id, e]) => [id, { expression: e.expression, timezone: e.timezone }]))
  }

  /** A plan was created, changed or deleted through this replica: apply it here and tell the others. */
  async planChanged (planId: string): Promise<void> {
    await this.reload(planId)
    await this.#bus.planChanged(planId).catch((err: unknown) => this.#log.warn({ err, planId }, 'could not notify other replicas of a plan change'))
  }

  /** Re-reads one plan and (re)creates, replaces or removes its task. */
  async reload (planId: string): Promise<void> {
    const [plan] = await this.#db.select({ id: plans.id, schedule: plans.schedule, timezone: plans.timezone, deletedAt: plans.deletedAt })
      .from(plans).where(eq(plans.id, planId))
    this.#apply(planId, plan === undefined || plan.deletedAt !== null ? null : plan)
  }

  /** Re-reads every scheduled plan (at start, periodically, after the bus reconnected). */
  async resync (): Promise<void> {
    if (this.#resyncing !== null) return await this.#resyncing
    this.#resyncing = (async () => {
      const rows = await this.#db.select({ id: plans.id, schedule: plans.schedule, timezone: plans.timezone }).from(plans)
        .where(and(isNull(plans.deletedAt), isNotNull(plans.schedule)))
      const seen = new Set<string>()
      for (const row of rows) {
        seen.add(row.id)
        this.#apply(row.id, row)
      }
      for (const id of [...this.#entries.keys()]) if (!seen.has(id)) this.#apply(id, null)
    })()
    try {
      await this.#resyncing
    } finally {
      this.#resyncing = null
    }
  }

  #apply (planId: string, plan: { schedule: string | null, timezone: string } | null): void {
    if (this.#stopped) return
    const current = this.#entries.get(planId)
    const wanted = plan?.schedule == null ? null : { expression: plan.schedule, timezone: plan.timezone }
    if (current !== undefined && wanted !== null && current.expression === wanted.expression && current.timezone === wanted.timezone) return
    if (current !== undefined) {
      void current.task.destroy()
      this.#entries.delete(planId)
    }
    if (wanted === null) {
      if (current !== undefined) this.#log.debug({ planId }, 'plan unscheduled')
      return
    }
    if (hasSeconds(wanted.expression) && !this.#allowSeconds) {
      // Left from a test or development setup: firing every few seconds in production is never what is meant.
      this.#log.error({ planId, schedule: wanted.expression }, 'plan not scheduled: 6-field (seconds) schedules need CLOUDPILOT_SCHEDULE_SECONDS=1 (tests and development only)')
      return
    }
    let task: ScheduledTask
    try {
      task = cron.createTask(wanted.expression, (ctx) => { this.#track(this.fire(planId, ctx.date)) }, {
        timezone: wanted.timezone,
        name: `plan:${planId}`,
        // A slot reached this late (the process was blocked) still runs; later than that it is recorded MISSED.
        missedExecutionTolerance: this.#lateGraceMs,
        logger: cronLogger(this.#log),
      })
    } catch (err) {
      this.#log.error({ err, planId, schedule: wanted.expression }, 'plan schedule could not be loaded')
      return
    }
    task.on('execution:missed', (ctx) => {
      this.#track(this.recordMissed(planId, ctx.date, `the coordinator reached this slot more than ${Math.round(this.#lateGraceMs / 1000)} s late (the process was blocked or suspended)`))
    })
    if (this.#timers) task.start()
    this.#entries.set(planId, { ...wanted, task })
    if (this.#log.isLevelEnabled('debug')) {
      this.#log.debug({ planId, schedule: wanted.expression, timezone: wanted.timezone, next: task.getNextRuns(1)[0]?.toISOString() }, current === undefined ? 'plan scheduled' : 'plan schedule changed')
    }
  }

  #track (promise: Promise<unknown>): void {
    const p = promise.catch((err: unknown) => this.#log.error({ err }, 'scheduler task failed'))
    this.#inFlight.add(p)
    void p.finally(() => this.#inFlight.delete(p))
  }

  /** A task left over from a schedule changed on another replica: drop the slot, pick up the new schedule. */
  #isStale (plan: Plan): boolean {
    const entry = this.#entries.get(plan.id)
    if (entry !== undefined && (entry.expression !== plan.schedule || entry.timezone !== plan.timezone)) {
      this.#track(this.reload(plan.id))
      return true
    }
    return false
  }

  /**
   * One slot of a plan is due (node-cron calls this): at most one row for it, whatever the number of replicas
   * calling it. Calls for the same slot within a few milliseconds are handled together (a burst of plans due in
   * the same second costs a few statements, not a few per plan).
   */
  async fire (planId: string, slot: Date): Promise<SlotOutcome> {
    return await new Promise<SlotOutcome>((resolve, reject) => {
      const key = slot.getTime()
      let batch = this.#batches.get(key)
      if (batch === undefined) {
        const created: Batch = { waiters: new Map() }
        batch = created
        this.#batches.set(key, created)
        setTimeout(() => {
          this.#batches.delete(key)
          this.fireMany(new Date(key), [...created.waiters.keys()]).then((outcomes) => {
            for (const [id, waiters] of created.waiters) for (const w of waiters) w.resolve(outcomes.get(id) ?? 'not-scheduled')
          }, (err: unknown) => {
            for (const waiters of created.waiters.values()) for (const w of waiters) w.reject(err)
          })
        }, FIRE_BATCH_MS).unref()
      }
      const waiters = batch.waiters.get(planId) ?? []
      waiters.push({ resolve, reject })
      batch.waiters.set(planId, waiters)
    })
  }

  /** The slot `slot` of each of the plans, now (see the class comment for what each becomes). */
  async fireMany (slot: Date, planIds: string[]): Promise<Map<string, SlotOutcome>> {
    const outcomes = new Map<string, SlotOutcome>(planIds.map((id) => [id, 'not-scheduled']))
    const log = this.#log.child({ slot: slot.toISOString() })
    for (let i = 0; i < planIds.length; i += FIRE_CHUNK) {
      const rows = await this.#db.select({ plan: plans, revokedAt: servers.revokedAt }).from(plans).innerJoin(servers, eq(servers.id, plans.serverId))
        .where(and(inArray(plans.id, planIds.slice(i, i + FIRE_CHUNK)), isNull(plans.deletedAt)))
      const due: Plan[] = []
      for (const { plan, revokedAt } of rows) {
        if (plan.schedule === null || this.#isStale(plan)) continue
        if (revokedAt !== null) {
          // The server was deleted: its plans have nowhere to run (the user removed it, this is not a failure).
          log.info({ planId: plan.id, serverId: plan.serverId }, 'scheduled run not fired: the plan\'s server was deleted')
          continue
        }
        if (plan.billingStatus !== 'active') {
          outcomes.set(plan.id, 'billing-inactive')
          log.info({ planId: plan.id, billingStatus: plan.billingStatus }, 'scheduled run not fired: billing is not active')
          continue
        }
        due.push(plan)
      }
      if (due.length === 0) continue
      // Still running from an earlier run (any trigger, any other slot): skip, do not stack.
      const open = await this.#db.select({ planId: backups.planId, id: backups.id, status: backups.status, createdAt: backups.createdAt }).from(backups)
        .where(and(inArray(backups.planId, due.map((p) => p.id)), inArray(backups.status, ['pending', 'in_progress']),
          or(isNull(backups.scheduledFor), ne(backups.scheduledFor, slot))))
      const openOf = new Map(open.map((o) => [o.planId, o]))
      const free: Plan[] = []
      for (const plan of due) {
        const running = openOf.get(plan.id)
        if (running === undefined) {
          free.push(plan)
          continue
        }
        const row = await this.#dispatcher.recordSlot(plan, slot, {
          status: 'cancelled',
          error: new CloudPilotError('SKIPPED_OVERLAP', `skipped the run due at ${slot.toISOString()}: backup ${running.id} of this plan (started ${running.createdAt.toISOString()}) was still ${running.status}`).toData(),
        })
        if (row === null) {
          outcomes.set(plan.id, 'taken')
          log.debug({ planId: plan.id }, 'slot already taken')
        } else {
          outcomes.set(plan.id, 'skipped-overlap')
          log.warn({ planId: plan.id, backupId: row.id, runningBackupId: running.id }, 'scheduled run skipped: the previous run is still going')
        }
      }
      for (const [planId, r] of await this.#dispatcher.runScheduled(free, slot)) {
        outcomes.set(planId, r.outcome)
        if (r.outcome === 'taken') log.debug({ planId }, 'slot already taken')
        else if (r.outcome === 'dispatched') log.info({ planId, backupId: r.row?.id }, 'scheduled run fired')
        else log.warn({ planId, backupId: r.row?.id, code: r.row?.error?.code }, 'scheduled run could not start')
      }
    }
    return outcomes
  }

  /** A slot that was not fired in time: a `failed` MISSED row (none when the slot already has a row). */
  async recordMissed (planId: string, slot: Date, why: string): Promise<SlotOutcome> {
    const [plan] = await this.#db.select().from(plans).where(and(eq(plans.id, planId), isNull(plans.deletedAt)))
    if (plan === undefined || plan.schedule === null || this.#isStale(plan)) return 'not-scheduled'
    if (plan.billingStatus !== 'active') return 'billing-inactive'
    return (await this.#recordMissed(plan, [slot], () => why)) === 1 ? 'failed' : 'taken'
  }

  /** MISSED rows for slots of one plan, in one statement; returns how many were new. */
  async #recordMissed (plan: Plan, slots: Date[], why: (index: number) => string): Promise<number> {
    const rows = await this.#dispatcher.recordSlots(plan, slots.map((s, i) => ({
      scheduledFor: s,
      status: 'failed' as const,
      error: new CloudPilotError('MISSED', `the run due at ${s.toISOString()} did not start: ${why(i)}`).toData(),
    })))
    for (const row of rows) this.#log.warn({ planId: plan.id, slot: row.scheduledFor?.toISOString(), backupId: row.id }, 'scheduled slot missed')
    return rows.length
  }

  /**
   * Slots that passed while no coordinator was running (since the last beat of any replica, at most `lookbackMs`
   * back, never before the plan's last change): the newest runs when it is at most `lateGraceMs` late, the
   * others become MISSED rows. With another replica alive, `previousSeenAt` is seconds ago and this finds
   * nothing it has not already handled (rows exist, inserts are no-ops).
   */
  async catchUp (previousSeenAt: Date | null): Promise<{ ran: number, missed: number }> {
    if (previousSeenAt === null) return { ran: 0, missed: 0 }
    const now = this.#clock()
    const floor = new Date(Math.max(previousSeenAt.getTime(), now.getTime() - this.#lookbackMs))
    let ran = 0
    let missed = 0
    const rows = await this.#db.select({ plan: plans }).from(plans).innerJoin(servers, eq(servers.id, plans.serverId))
      .where(and(isNull(plans.deletedAt), isNotNull(plans.schedule), eq(plans.billingStatus, 'active'), isNull(servers.revokedAt)))
    for (const { plan } of rows) {
      if (plan.schedule === null || (hasSeconds(plan.schedule) && !this.#allowSeconds)) continue
      const after = new Date(Math.max(floor.getTime(), plan.updatedAt.getTime()))
      if (after >= now) continue
      let matcher: SlotMatcher
      try {
        matcher = new SlotMatcher(plan.schedule, plan.timezone)
      } catch {
        continue
      }
      let found: { slots: Date[], total: number }
      try {
        found = matcher.slotsBetween(after, now, MAX_MISSED_ROWS_PER_PLAN)
      } finally {
        matcher.close()
      }
      const { slots, total } = found
      const unrecorded = total - slots.length
      const newest = slots.at(-1)
      if (newest !== undefined && now.getTime() - newest.getTime() <= this.#lateGraceMs) {
        slots.pop()
        if (await this.fire(plan.id, newest) === 'dispatched') ran++
      }
      if (slots.length === 0) continue
      const down = `no coordinator was running (the last one was seen at ${previousSeenAt.toISOString()})`
      missed += await this.#recordMissed(plan, slots, (i) => i === 0 && unrecorded > 0
        ? `${down}; ${unrecorded} earlier slots since ${after.toISOString()} were missed too and are not recorded one by one`
        : down)
    }
    if (ran + missed > 0) this.#log.warn({ ran, missed, since: previousSeenAt.toISOString() }, 'slots that passed while no coordinator was running')
    return { ran, missed }
  }

  async stop (): Promise<void> {
    this.#stopped = true
    if (this.#resyncTimer !== null) clearInterval(this.#resyncTimer)
    for (const entry of this.#entries.values()) void entry.task.destroy()
    this.#entries.clear()
    await Promise.allSettled([...this.#inFlight])
  }
}

function cronLogger (log: Logger): { info: (m: string) => void, warn: (m: string) => void, error: (m: string | Error, err?: Error) => void, debug: (m: string | Error, err?: Error) => void } {
  const child = log.child({ component: 'node-cron' })
  return {
    info: (m) => child.debug(m),
    warn: (m) => child.warn(m),
    error: (m, err) => child.error({ err: err ?? m }, typeof m === 'string' ? m : 'node-cron error'),
    debug: (m) => child.debug(typeof m === 'string' ? m : m.message),
  }
}
