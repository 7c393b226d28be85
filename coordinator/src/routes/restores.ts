import { and, desc, eq, lt, or } from 'drizzle-orm'
import { CloudPilotError } from '@cloudpilot/protocol'
import type { App } from '../http/app.ts'
import type { CoordinatorContext } from '../context.ts'
import { restores, type Restore } from '../db/schema.ts'
import { CreateRestore, RestoreBody, RestoreListQuery } from '../http/schemas/restore.ts'
import { IdParams, ListOf, errorResponses } from '../http/schemas/common.ts'
import { restoreBody } from '../http/serialize.ts'
import { decodeCursor, encodeCursor } from '../http/cursor.ts'
import { findBackup } from './backups.ts'

export function restoreRoutes (app: App, ctx: CoordinatorContext): void {
  app.post('/api/v1/backups/:id/restore', {
    preHandler: ctx.authenticate,
    schema: {
      tags: ['restores'],
      summary: 'Restore a completed backup onto its server or another one: answers the restore (pending). The target agent fetches the archive itself and verifies its sha256 before writing anything.',
      params: IdParams, body: CreateRestore, response: { 201: RestoreBody, ...errorResponses },
    },
  }, async (request, reply) => {
    const backup = await findBackup(ctx, request.auth.workspaceId, request.params.id)
    const body = request.body
    const row = await ctx.restoreService.create(backup, {
      ...(body.targetServerId === undefined ? {} : { targetServerId: body.targetServerId }),
      ...(body.targetDatabase === undefined ? {} : { targetDatabase: body.targetDatabase }),
      ...(body.sourceDatabase === undefined ? {} : { sourceDatabase: body.sourceDatabase }),
      ...(body.replaceExisting === undefined ? {} : { replaceExisting: body.replaceExisting }),
      ...(body.targetPath === undefined ? {} : { targetPath: body.targetPath }),
      ...(body.parts === undefined ? {} : { parts: body.parts }),
      ...(body.connection === undefined ? {} : { connection: body.connection }),
      ...(body.timeoutSeconds === undefined ? {} : { timeoutSeconds: body.timeoutSeconds }),
    })
    return reply.code(201).send(restoreBody(row))
  })

  app.get('/api/v1/restores', {
    preHandler: ctx.authenticate,
    schema: { tags: ['restores'], summary: 'Restores, newest first', querystring: RestoreListQuery, response: { 200: ListOf(RestoreBody), ...errorResponses } },
  }, async (request) => {
    const q = request.query
    const limit = q.limit ?? 50
    const cursor = decodeCursor(q.cursor)
    const rows = await ctx.db.select().from(restores).where(and(
      eq(restores.workspaceId, request.auth.workspaceId),
      q.backupId === undefined ? undefined : eq(restores.backupId, q.backupId),
      q.targetServerId === undefined ? undefined : eq(restores.targetServerId, q.targetServerId),
      q.status === undefined ? undefined : eq(restores.status, q.status),
      cursor === null ? undefined : or(lt(restores.createdAt, cursor.at), and(eq(restores.createdAt, cursor.at), lt(restores.id, cursor.id))),
    )).orderBy(desc(restores.createdAt), desc(restores.id)).limit(limit + 1)
    const page = rows.slice(0, limit)
    const last = page.at(-1)
    return { items: page.map(restoreBody), nextCursor: rows.length > limit && last !== undefined ? encodeCursor(last.createdAt, last.id) : null }
  })

  app.get('/api/v1/restores/:id', {
    preHandler: ctx.authenticate,
    schema: { tags: ['restores'], summary: 'Restore status, progress and error', params: IdParams, response: { 200: RestoreBody, ...errorResponses } },
  }, async (request) => restoreBody(await findRestore(ctx, request.auth.workspaceId, request.params.id)))

  app.post('/api/v1/restores/:id/cancel', {
    preHandler: ctx.authenticate,
    schema: {
      tags: ['restores'],
      summary: 'Cancel a pending or in_progress restore (409 otherwise). A running one becomes cancelled when the agent confirms it stopped; its error says whether the target may be partially written.',
      params: IdParams, response: { 202: RestoreBody, ...errorResponses },
    },
  }, async (request, reply) => {
    const row = await findRestore(ctx, request.auth.workspaceId, request.params.id)
    return reply.code(202).send(restoreBody(await ctx.restoreService.cancel(row)))
  })
}

export async function findRestore (ctx: CoordinatorContext, workspaceId: string, id: string): Promise<Restore> {
  const [row] = await ctx.db.select().from(restores).where(and(eq(restores.id, id), eq(restores.workspaceId, workspaceId)))
  if (row === undefined) throw new CloudPilotError('NOT_FOUND', `no restore ${id}`)
  return row
}
