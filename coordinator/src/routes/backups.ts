import { and, desc, eq, isNotNull, isNull, lt, or } from 'drizzle-orm'
import { archiveContentType, CloudPilotError } from '@cloudpilot/protocol'
import type { App } from '../http/app.ts'
import type { CoordinatorContext } from '../context.ts'
import { backups, type Backup } from '../db/schema.ts'
import { BackupBody, BackupListQuery } from '../http/schemas/backup.ts'
import { IdParams, ListOf, errorResponses } from '../http/schemas/common.ts'
import { backupBody } from '../http/serialize.ts'
import { decodeCursor, encodeCursor } from '../http/cursor.ts'
import { openBackupDownload } from '../services/downloads.ts'

export function backupRoutes (app: App, ctx: CoordinatorContext): void {
  app.get('/api/v1/backups', {
    preHandler: ctx.authenticate,
    schema: { tags: ['backups'], summary: 'History rows, newest first', querystring: BackupListQuery, response: { 200: ListOf(BackupBody), ...errorResponses } },
  }, async (request) => {
    const q = request.query
    const limit = q.limit ?? 50
    const cursor = decodeCursor(q.cursor)
    const rows = await ctx.db.select().from(backups).where(and(
      eq(backups.workspaceId, request.auth.workspaceId),
      q.planId === undefined ? undefined : eq(backups.planId, q.planId),
      q.serverId === undefined ? undefined : eq(backups.serverId, q.serverId),
      q.status === undefined ? undefined : eq(backups.status, q.status),
      q.expired === undefined ? undefined : q.expired ? isNotNull(backups.expiredAt) : isNull(backups.deletion),
      cursor === null ? undefined : or(lt(backups.createdAt, cursor.at), and(eq(backups.createdAt, cursor.at), lt(backups.id, cursor.id))),
    )).orderBy(desc(backups.createdAt), desc(backups.id)).limit(limit + 1)
    const page = rows.slice(0, limit)
    const last = page.at(-1)
    return { items: page.map(backupBody), nextCursor: rows.length > limit && last !== undefined ? encodeCursor(last.createdAt, last.id) : null }
  })

  app.get('/api/v1/backups/:id', {
    preHandler: ctx.authenticate,
    schema: { tags: ['backups'], params: IdParams, response: { 200: BackupBody, ...errorResponses } },
  }, async (request) => backupBody(await findBackup(ctx, request.auth.workspaceId, request.params.id)))

  app.post('/api/v1/backups/:id/cancel', {
    preHandler: ctx.authenticate,
    schema: {
      tags: ['backups'],
      summary: 'Cancel a pending or in_progress backup (409 otherwise). A running one becomes cancelled when the agent confirms it stopped.',
      params: IdParams, response: { 202: BackupBody, ...errorResponses },
    },
  }, async (request, reply) => {
    const row = await findBackup(ctx, request.auth.workspaceId, request.params.id)
    return reply.code(202).send(backupBody(await ctx.dispatcher.cancel(row)))
  })

  app.get('/api/v1/backups/:id/download', {
    preHandler: ctx.authenticate,
    schema: { tags: ['backups'], summary: 'The archive as it was made (.sql.gz, .tar.gz, ...)', params: IdParams },
  }, async (request, reply) => {
    const row = await findBackup(ctx, request.auth.workspaceId, request.params.id)
    const controller = new AbortController()
    request.raw.once('close', () => { if (!reply.raw.writableFinished) controller.abort() })
    const stream = await openBackupDownload(ctx, row, controller.signal)
    reply.header('content-type', archiveContentType(row.fileName))
    reply.header('content-disposition', `attachment; filename="${row.fileName}"`)
    if (row.sizeBytes !== null) reply.header('content-length', String(row.sizeBytes))
    if (row.sha256 !== null) reply.header('x-checksum-sha256', row.sha256)
    return reply.send(stream)
  })
}

export async function findBackup (ctx: CoordinatorContext, workspaceId: string, id: string): Promise<Backup> {
  const [row] = await ctx.db.select().from(backups).where(and(eq(backups.id, id), eq(backups.workspaceId, workspaceId)))
  if (row === undefined) throw new CloudPilotError('NOT_FOUND', `no backup ${id}`)
  return row
}
