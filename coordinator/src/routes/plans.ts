import { and, desc, eq, isNotNull, isNull, sql } from 'drizzle-orm'
import Type from 'typebox'
import {
  CloudPilotError, DatabaseSource, FilesSource, FullSource, SnapshotSource, type BackupType,
} from '@cloudpilot/protocol'
import type { App } from '../http/app.ts'
import type { CoordinatorContext } from '../context.ts'
import { backups, plans, type Plan } from '../db/schema.ts'
import { scheduleProblem } from '../services/cron-slots.ts'
import { CreatePlan, PatchPlan, PlanBody } from '../http/schemas/plan.ts'
import { BackupBody } from '../http/schemas/backup.ts'
import { IdParams, ListOf, errorResponses } from '../http/schemas/common.ts'
import { backupBody, planBody } from '../http/serialize.ts'
import { validateWith } from '../http/validate.ts'
import { findServer } from './servers.ts'
import { findDestination } from './destinations.ts'

const SOURCE_SCHEMAS = { database: DatabaseSource, files: FilesSource, full: FullSource, snapshot: SnapshotSource } as const

export function planRoutes (app: App, ctx: CoordinatorContext): void {
  app.get('/api/v1/plans', {
    preHandler: ctx.authenticate,
    schema: { tags: ['plans'], querystring: Type.Object({ serverId: Type.Optional(Type.String({ format: 'uuid' })) }), response: { 200: ListOf(PlanBody), ...errorResponses } },
  }, async (request) => {
    const rows = await ctx.db.select().from(plans)
      .where(and(eq(plans.workspaceId, request.auth.workspaceId), isNull(plans.deletedAt), request.query.serverId === undefined ? undefined : eq(plans.serverId, request.query.serverId)))
      .orderBy(desc(plans.createdAt))
    return { items: rows.map(planBody), nextCursor: null }
  })

  app.post('/api/v1/plans', {
    preHandler: ctx.authenticate,
    schema: { tags: ['plans'], summary: 'Create a backup plan (source password is write-only)', body: CreatePlan, response: { 201: PlanBody, ...errorResponses } },
  }, async (request, reply) => {
    const body = request.body
    const ws = request.auth.workspaceId
    await findServer(ctx, ws, body.serverId)
    const destinationId = body.destinationId ?? null
    if (destinationId !== null) await findDestination(ctx, ws, destinationId)
    const keepLocal = body.keepLocal ?? destinationId === null
    if (body.type === 'snapshot') {
      throw new CloudPilotError('UNSUPPORTED', 'cloud disk snapshot plans are not available in this version', { hint: 'Use a files or full plan for the disk\'s contents meanwhile.' })
    }
    checkPlanShape({ destinationId, keepLocal, schedule: body.schedule ?? null, timezone: body.timezone ?? 'UTC', encryption: body.encryption ?? null }, ctx.config.scheduleSeconds)
    const { source, secret } = splitSource(body.type, body.source)
    const [row] = await ctx.db.insert(plans).values({
      workspaceId: ws,
      name: body.name,
      serverId: body.serverId,
      type: body.type,
      source,
      sourceSecretEnc: secret === null ? null : ctx.secrets.sealJson(secret),
      destinationId,
      schedule: body.schedule ?? null,
      timezone: body.timezone ?? 'UTC',
      retentionDays: body.retentionDays ?? 30,
      keepDaily: body.keepDaily ?? null,
      keepWeekly: body.keepWeekly ?? null,
      keepMonthly: body.keepMonthly ?? null,
      keepYearly: body.keepYearly ?? null,
      keepLocal,
      compression: body.compression ?? 'gzip',
      encryption: body.encryption ?? null,
      timeoutSeconds: body.timeoutSeconds ?? 21600,
    }).returning()
    if (row === undefined) throw new Error('insert returned nothing')
    await ctx.scheduler.planChanged(row.id)
    return reply.code(201).send(planBody(row))
  })

  app.get('/api/v1/plans/:id', {
    preHandler: ctx.authenticate,
    schema: { tags: ['plans'], params: IdParams, response: { 200: PlanBody, ...errorResponses } },
  }, async (request) => planBody(await findPlan(ctx, request.auth.workspaceId, request.params.id)))

  app.patch('/api/v1/plans/:id', {
    preHandler: ctx.authenticate,
    schema: { tags: ['plans'], params: IdParams, body: PatchPlan, response: { 200: PlanBody, ...errorResponses } },
  }, async (request) => {
    const current = await findPlan(ctx, request.auth.workspaceId, request.params.id)
    const body = request.body
    const update: Partial<typeof plans.$inferInsert> = { updatedAt: new Date() }
    if (body.destinationId !== undefined && body.destinationId !== null) await findDestination(ctx, request.auth.workspaceId, body.destinationId)
    const destinationId = body.destinationId === undefined ? current.destinationId : body.destinationId
    const keepLocal = body.keepLocal ?? (body.destinationId === null ? true : current.keepLocal)
    checkPlanShape({ destinationId, keepLocal, schedule: body.schedule === undefined ? current.schedule : body.schedule, timezone: body.timezone ?? current.timezone, encryption: body.encryption === undefined ? current.encryption : body.encryption }, ctx.config.scheduleSeconds)
    if (body.source !== undefined) {
      const { source, secret } = splitSource(current.type, body.source)
      update.source = source
      // A source sent without a password keeps the stored one; an empty password removes it.
      if (secret !== null) update.sourceSecretEnc = secret.password === '' ? null : ctx.secrets.sealJson(secret)
    }
    for (const key of ['name', 'schedule', 'timezone', 'retentionDays', 'keepDaily', 'keepWeekly', 'keepMonthly', 'keepYearly', 'compression', 'encryption', 'timeoutSeconds'] as const) {
      if (body[key] !== undefined) (update as Record<string, unknown>)[key] = body[key]
    }
    update.destinationId = destinationId
    update.keepLocal = keepLocal
    const [row] = await ctx.db.update(plans).set(update).where(eq(plans.id, current.id)).returning()
    if (row === undefined) throw new CloudPilotError('NOT_FOUND')
    if (body.retentionDays !== undefined && body.retentionDays !== current.retentionDays) {
      // expiresAt always follows the plan's current retentionDays, for the backups retention has not taken yet.
      await ctx.db.update(backups).set({ expiresAt: sql`${backups.finishedAt} + ${body.retentionDays}::int * interval '1 day'` })
        .where(and(eq(backups.planId, row.id), eq(backups.status, 'completed'), isNull(backups.deletion), isNotNull(backups.finishedAt)))
    }
    await ctx.scheduler.planChanged(row.id)
    return planBody(row)
  })

  app.delete('/api/v1/plans/:id', {
    preHandler: ctx.authenticate,
    schema: { tags: ['plans'], summary: 'Delete a plan (its history stays)', params: IdParams, response: { 204: Type.Null(), ...errorResponses } },
  }, async (request, reply) => {
    const current = await findPlan(ctx, request.auth.workspaceId, request.params.id)
    await ctx.db.update(plans).set({ deletedAt: new Date(), schedule: null }).where(eq(plans.id, current.id))
    await ctx.scheduler.planChanged(current.id)
    return reply.code(204).send(null)
  })

  app.post('/api/v1/plans/:id/run', {
    preHandler: ctx.authenticate,
    schema: { tags: ['plans'], summary: 'Run the plan now: answers the new history row (pending)', params: IdParams, response: { 201: BackupBody, ...errorResponses } },
  }, async (request, reply) => {
    const plan = await findPlan(ctx, request.auth.workspaceId, request.params.id)
    const row = await ctx.dispatcher.runPlan(plan, { trigger: 'manual' })
    if (row === null) throw new Error('manual run produced no row')
    return reply.code(201).send(backupBody(row))
  })
}

export async function findPlan (ctx: CoordinatorContext, workspaceId: string, id: string): Promise<Plan> {
  const [row] = await ctx.db.select().from(plans).where(and(eq(plans.id, id), eq(plans.workspaceId, workspaceId), isNull(plans.deletedAt)))
  if (row === undefined) throw new CloudPilotError('NOT_FOUND', `no plan ${id}`)
  return row
}

function checkPlanShape (p: { destinationId: string | null, keepLocal: boolean, schedule: string | null, timezone: string, encryption: unknown }, allowSeconds: boolean): void {
  if (p.destinationId === null && !p.keepLocal) {
    throw new CloudPilotError('VALIDATION_FAILED', 'a plan without a destination must keep a local copy (keepLocal: true)')
  }
  const problem = p.schedule === null ? null : scheduleProblem(p.schedule, allowSeconds)
  if (problem !== null) throw new CloudPilotError('VALIDATION_FAILED', problem)
  try {
    new Intl.DateTimeFormat('en', { timeZone: p.timezone })
  } catch {
    throw new CloudPilotError('VALIDATION_FAILED', `unknown timezone ${JSON.stringify(p.timezone)}`)
  }
  if (p.encryption !== null && p.encryption !== undefined) {
    throw new CloudPilotError('UNSUPPORTED', 'client-side encryption is not available in this version', { hint: 'Create the plan with encryption: null; encrypt at the destination (bucket encryption) meanwhile.' })
  }
}

/** Validates a source for the plan type and splits the password off (stored encrypted, never returned). */
function splitSource (type: BackupType, raw: Record<string, unknown>): { source: Record<string, unknown>, secret: { password: string } | null } {
  const source = structuredClone(validateWith(SOURCE_SCHEMAS[type], raw, 'source')) as Record<string, unknown>
  if (type === 'full') {
    // A full archive keeps its manifest and dumps under cloudpilot/: a source path there would collide.
    const colliding = (source.paths as string[]).filter((p) => /^\/cloudpilot(?:\/|$)/.test(p))
    if (colliding.length > 0) throw new CloudPilotError('VALIDATION_FAILED', `source.paths: a full backup keeps its own data under cloudpilot/ in the archive, so it cannot include ${colliding.join(', ')} (back it up with a files plan)`)
  }
  const holder = type === 'full' ? source.database as Record<string, unknown> : type === 'database' ? source : null
  if (holder === null || holder.password === undefined) return { source, secret: null }
  const password = String(holder.password)
  delete holder.password
  return { source, secret: { password } }
}
