/**
 * Measures a schedule burst (DESIGN §9: 10,000 plans due in the same minute all dispatched within 10 s, none twice):
 * an in-process coordinator on a fresh PostgreSQL database, N plans on a 6-field schedule firing on the next
 * :00/:30 second through node-cron's real timers. The server has no agent connected, so "dispatched" ends with
 * the row failed AGENT_LOST (the same statements as a send, plus one update). Prints the time from the slot until
 * every row exists and until none is pending.
 *
 *   npx node coordinator/scripts/measure-schedule-burst.ts [plans=10000]
 */
import pino from 'pino'
import { sql } from 'drizzle-orm'
import { execFileSync } from 'node:child_process'
import { mkdtempSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createCoordinator } from '../src/coordinator.ts'
import { DEFAULTS } from '../src/config.ts'

const N = Number(process.argv[2] ?? 10000)
const name = `cp_burst_${Date.now()}`
const psql = (statement: string): void => { execFileSync('psql', ['-h', '127.0.0.1', '-U', 'postgres', '-d', 'postgres', '-q', '-c', statement]) }
psql(`create database ${name}`)
try {
  const c = await createCoordinator({
    ...DEFAULTS, port: 0, host: '127.0.0.1', dataDir: mkdtempSync(path.join(os.tmpdir(), 'cp-burst-')),
    databaseUrl: `postgres://postgres@127.0.0.1:5432/${name}`, adminToken: 'cpk_burst', scheduleSeconds: true,
  }, { log: pino({ level: 'warn' }) })
  await c.listen()
  const db = c.database.db
  await db.execute(sql`insert into servers (workspace_id, name) values (${c.admin.workspaceId}, 'burst')`)
  await db.execute(sql`insert into plans (workspace_id, name, server_id, type, source, keep_local, schedule)
    select ${c.admin.workspaceId}, 'p' || g, (select id from servers limit 1), 'database', '{"engine":"postgresql","databases":["x"]}'::jsonb, true, '0,30 * * * * *'
    from generate_series(1, ${N}) g`)
  const t0 = performance.now()
  await c.ctx.scheduler.resync()
  console.log(`${N} plans loaded (node-cron tasks) in ${Math.round(performance.now() - t0)} ms, rss ${Math.round(process.memoryUsage.rss() / 1e6)} MB`)
  const slot = Math.ceil((Date.now() + 1000) / 30000) * 30000
  while (Date.now() < slot) await new Promise((resolve) => setTimeout(resolve, 20))
  const counts = async (): Promise<{ n: number, pending: number, slots: number }> => {
    const r = await db.execute(sql`select count(*)::int as n, count(*) filter (where status = 'pending')::int as pending, count(distinct (plan_id, scheduled_for))::int as slots from backups where scheduled_for = ${new Date(slot).toISOString()}::timestamptz`) as unknown as { rows?: Array<{ n: number, pending: number, slots: number }> }
    return (r.rows ?? (r as unknown as Array<{ n: number, pending: number, slots: number }>))[0] as { n: number, pending: number, slots: number }
  }
  let allRowsAt = 0
  for (;;) {
    const k = await counts()
    if (allRowsAt === 0 && k.n >= N) allRowsAt = Date.now() - slot
    if (k.n >= N && k.pending === 0) {
      console.log(`slot ${new Date(slot).toISOString()}: ${k.n} rows (${k.slots} distinct plan slots) after ${allRowsAt} ms, none pending after ${Date.now() - slot} ms`)
      break
    }
    if (Date.now() - slot > 120_000) { console.log('gave up after 120 s', k); break }
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  await c.close()
} finally {
  psql(`drop database ${name} with (force)`)
}
