import cron, { type ScheduledTask } from 'node-cron'
import { MINUTE, SECOND } from '@cloudpilot/protocol'

/**
 * Cron expressions as node-cron reads them, and the slots they define. The live firing is node-cron's own timer
 * (services/scheduler.ts); this file answers "which slots lay between two instants" (missed while no coordinator
 * ran) and "when is the next one", with node-cron's matcher, so both agree on what a slot is.
 */

/** Checks a plan's schedule: 5 fields (minute hour day-of-month month day-of-week), or 6 with seconds first when allowed. */
export function scheduleProblem (expression: string, allowSeconds: boolean): string | null {
  const fields = expression.trim().split(/\s+/).length
  if (fields !== 5 && !(allowSeconds && fields === 6)) {
    return allowSeconds
      ? 'schedule must have 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds first'
      : 'schedule must have exactly 5 fields: minute hour day-of-month month day-of-week'
  }
  const detail = cron.validateDetailed(expression)
  if (!detail.valid) return `schedule ${JSON.stringify(expression)} is not a valid cron expression: ${detail.errors.map((e) => e.message).join('; ')}`
  return null
}

/** True when the schedule is a 6-field (seconds) expression. */
export function hasSeconds (expression: string): boolean {
  return expression.trim().split(/\s+/).length === 6
}

/** A node-cron matcher for one schedule; `close()` releases it (node-cron keeps every task in a registry). */
export class SlotMatcher {
  readonly expression: string
  readonly timezone: string
  readonly #task: ScheduledTask
  readonly #stepMs: number
  readonly #seconds: Set<number> | null
  readonly #utcMinutes: Set<number>

  constructor (expression: string, timezone: string) {
    this.expression = expression
    this.timezone = timezone
    this.#task = cron.createTask(expression, () => {}, { timezone, name: `matcher:${expression}@${timezone}` })
    const fields = cron.parse(expression)
    this.#stepMs = hasSeconds(expression) ? SECOND : MINUTE
    this.#seconds = hasSeconds(expression) ? new Set(fields.second) : null
    // Every zone's offset from UTC is a whole multiple of 15 minutes, so a local minute m can only fall on UTC
    // minutes m, m-15, m-30, m-45: a cheap filter before asking node-cron about an instant.
    this.#utcMinutes = new Set(fields.minute.flatMap((m) => [0, 15, 30, 45].map((o) => (m - o + 60) % 60)))
  }

  match (at: Date): boolean {
    return this.#task.match(at)
  }

  /**
   * Slots in the half-open interval (after, until]: at most the `limit` latest, oldest first, and how many there
   * were in all.
   */
  slotsBetween (after: Date, until: Date, limit: number): { slots: Date[], total: number } {
    const slots: Date[] = []
    let total = 0
    const step = this.#stepMs
    let t = Math.floor(after.getTime() / step) * step + step
    for (; t <= until.getTime(); t += step) {
      const d = new Date(t)
      if (!this.#utcMinutes.has(d.getUTCMinutes())) continue
      if (this.#seconds !== null && !this.#seconds.has(d.getUTCSeconds())) continue
      if (!this.#task.match(d)) continue
      total++
      slots.push(d)
      if (slots.length > limit) slots.shift()
    }
    return { slots, total }
  }

  close (): void {
    void this.#task.destroy()
  }
}

/** The next slot of a schedule after now, or null when it has none. */
export function nextSlot (expression: string, timezone: string): Date | null {
  const matcher = cron.createTask(expression, () => {}, { timezone })
  try {
    return matcher.getNextRuns(1)[0] ?? null
  } catch {
    return null
  } finally {
    void matcher.destroy()
  }
}
