import { and, asc, eq, isNotNull, isNull } from 'drizzle-orm'
import type { App } from '../http/app.ts'
import type { CoordinatorContext } from '../context.ts'
import { backups } from '../db/schema.ts'
import { RetentionPreviewBody } from '../http/schemas/plan.ts'
import { IdParams, errorResponses } from '../http/schemas/common.ts'
import { decideRetention, deletionReason, describeReasons } from '../services/retention-policy.ts'
import { retentionPolicyOf } from '../services/retention-sweeper.ts'
import { findPlan } from './plans.ts'

const iso = (d: Date | null): string | null => (d === null ? null : d.toISOString())

export function retentionRoutes (app: App, ctx: CoordinatorContext): void {
  app.get('/api/v1/plans/:id/retention-preview', {
    preHandler: ctx.authenticate,
    schema: {
      tags: ['plans'],
      summary: 'What the next retention sweep would delete, and what it keeps with the reason (retentionDays, newest, keepDaily/Weekly/Monthly/Yearly)',
      params: IdParams,
      response: { 200: RetentionPreviewBody, ...errorResponses },
    },
  }, async (request) => {
    const plan = await findPlan(ctx, request.auth.workspaceId, request.params.id)
    const policy = retentionPolicyOf(plan)
    const now = ctx.clock()
    const live = await ctx.db.select().from(backups)
      .where(and(eq(backups.planId, plan.id), eq(backups.status, 'completed'), isNull(backups.deletion)))
    const deleting = await ctx.db.select().from(backups)
      .where(and(eq(backups.planId, plan.id), isNotNull(backups.deletion), isNull(backups.expiredAt))).orderBy(asc(backups.createdAt))
    const byId = new Map(live.map((r) => [r.id, r]))
    const verdicts = decideRetention(live, policy, now)
    const item = (id: string) => {
      const r = byId.get(id)
      if (r === undefined) throw new Error(`backup ${id} vanished`)
      return { backupId: r.id, createdAt: r.createdAt.toISOString(), expiresAt: iso(r.expiresAt), sizeBytes: r.sizeBytes }
    }
    const reason = deletionReason(policy)
    return {
      planId: plan.id,
      at: now.toISOString(),
      policy,
      delete: verdicts.filter((v) => !v.keep).map((v) => ({ ...item(v.id), reason })),
      keep: verdicts.filter((v) => v.keep).map((v) => ({ ...item(v.id), reasons: v.reasons, why: describeReasons(v.reasons, policy) })),
      deleting: deleting.map((r) => ({ backupId: r.id, createdAt: r.createdAt.toISOString(), expiresAt: iso(r.expiresAt), sizeBytes: r.sizeBytes, lastError: r.deletion?.lastError ?? null })),
    }
  })
}
