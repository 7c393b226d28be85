import { sql } from 'drizzle-orm'
import Type from 'typebox'
import type { App } from '../http/app.ts'
import type { CoordinatorContext } from '../context.ts'

/** Liveness at /healthz and Prometheus metrics at /metrics. */
export function healthRoutes (app: App, ctx: CoordinatorContext): void {
  app.get('/healthz', {
    schema: { tags: ['health'], security: [], response: { 200: Type.Object({ ok: Type.Boolean(), agentsConnected: Type.Integer() }) } },
  }, async () => {
    await ctx.db.execute(sql`select 1`)
    return { ok: true, agentsConnected: ctx.hub.size }
  })

  app.get('/metrics', { schema: { hide: true } }, async (_request, reply) => {
    const rows = await ctx.db.execute(sql`select status, count(*)::int as n from backups group by status`)
    const servers = await ctx.db.execute(sql`select status, count(*)::int as n from servers where revoked_at is null group by status`)
    const mem = process.memoryUsage()
    const lines = [
      '# HELP cloudpilot_agents_connected Agent WebSocket sessions on this coordinator process.',
      '# TYPE cloudpilot_agents_connected gauge',
      `cloudpilot_agents_connected ${ctx.hub.size}`,
      '# HELP cloudpilot_servers Servers by status.',
      '# TYPE cloudpilot_servers gauge',
      ...rowsOf(servers).map((r) => `cloudpilot_servers{status="${r.status}"} ${r.n}`),
      '# HELP cloudpilot_backups Backup history rows by status.',
      '# TYPE cloudpilot_backups gauge',
      ...rowsOf(rows).map((r) => `cloudpilot_backups{status="${r.status}"} ${r.n}`),
      '# HELP process_resident_memory_bytes Resident memory of the coordinator process.',
      '# TYPE process_resident_memory_bytes gauge',
      `process_resident_memory_bytes ${mem.rss}`,
    ]
    return reply.type('text/plain; version=0.0.4').send(lines.join('\n') + '\n')
  })
}

function rowsOf (result: unknown): Array<{ status: string, n: number }> {
  const r = result as { rows?: Array<{ status: string, n: number }> } | Array<{ status: string, n: number }>
  return Array.isArray(r) ? r : (r.rows ?? [])
}
