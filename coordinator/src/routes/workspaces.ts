import { eq } from 'drizzle-orm'
import Type from 'typebox'
import { CloudPilotError, DESTINATION_SCHEMAS, DESTINATION_TYPES, StringEnum } from '@cloudpilot/protocol'
import type { FastifyRequest } from 'fastify'
import { S3_PRESETS } from '@cloudpilot/storage'
import type { App } from '../http/app.ts'
import type { CoordinatorContext } from '../context.ts'
import { apiTokens, workspaces, type Workspace } from '../db/schema.ts'
import { hashToken, newToken } from '../crypto/tokens.ts'
import { DateTime, IdParams, ListOf, Uuid, errorResponses } from '../http/schemas/common.ts'

const WorkspaceBody = Type.Object({
  id: Uuid,
  name: Type.String(),
  grantedDestinationTypes: Type.Array(StringEnum(DESTINATION_TYPES)),
  createdAt: DateTime,
})

const DestinationTypeBody = Type.Object({
  type: StringEnum(DESTINATION_TYPES),
  /** s3: providers that are S3-compatible, usable as `preset` when creating a destination. */
  presets: Type.Optional(Type.Array(Type.Unknown())),
  /** JSON Schemas of `config` and of the write-only `credentials`. */
  configSchema: Type.Unknown(),
  credentialsSchema: Type.Unknown(),
})

function workspaceBody (w: Workspace) {
  return { id: w.id, name: w.name, grantedDestinationTypes: w.grantedDestinationTypes, createdAt: w.createdAt.toISOString() }
}

function requireAdmin (request: FastifyRequest): void {
  if (request.auth.role !== 'admin') throw new CloudPilotError('FORBIDDEN', 'only the admin token may manage workspaces')
}

/**
 * Workspaces and their grants. The admin token (created on first start) manages workspaces; each workspace gets
 * its own API token and may only create destinations of the types it was granted.
 */
export function workspaceRoutes (app: App, ctx: CoordinatorContext): void {
  app.get('/api/v1/destination-types', {
    preHandler: ctx.authenticate,
    schema: { tags: ['destinations'], summary: 'The destination types this token\'s workspace may use, with their config and credential schemas', response: { 200: ListOf(DestinationTypeBody), ...errorResponses } },
  }, async (request) => {
    const [ws] = await ctx.db.select().from(workspaces).where(eq(workspaces.id, request.auth.workspaceId))
    const granted = new Set(ws?.grantedDestinationTypes ?? [])
    return {
      items: DESTINATION_TYPES.filter((t) => granted.has(t)).map((type) => ({
        type, configSchema: DESTINATION_SCHEMAS[type].config, credentialsSchema: DESTINATION_SCHEMAS[type].credentials,
        ...(type === 's3' ? { presets: [...S3_PRESETS] } : {}),
      })),
      nextCursor: null,
    }
  })

  app.get('/api/v1/workspaces', {
    preHandler: ctx.authenticate,
    schema: { tags: ['workspaces'], response: { 200: ListOf(WorkspaceBody), ...errorResponses } },
  }, async (request) => {
    requireAdmin(request)
    return { items: (await ctx.db.select().from(workspaces).orderBy(workspaces.createdAt)).map(workspaceBody), nextCursor: null }
  })

  app.post('/api/v1/workspaces', {
    preHandler: ctx.authenticate,
    schema: {
      tags: ['workspaces'], summary: 'Create a workspace with its granted destination types; answers its first API token (shown once)',
      body: Type.Object({ name: Type.String({ minLength: 1, maxLength: 200 }), grantedDestinationTypes: Type.Array(StringEnum(DESTINATION_TYPES), { uniqueItems: true }) }, { additionalProperties: false }),
      response: { 201: Type.Object({ workspace: WorkspaceBody, token: Type.String() }), ...errorResponses },
    },
  }, async (request, reply) => {
    requireAdmin(request)
    const token = newToken('api')
    const created = await ctx.db.transaction(async (tx) => {
      const [w] = await tx.insert(workspaces).values({ name: request.body.name, grantedDestinationTypes: request.body.grantedDestinationTypes }).returning()
      if (w === undefined) throw new Error('insert returned nothing')
      await tx.insert(apiTokens).values({ workspaceId: w.id, name: `${request.body.name} token`, role: 'member', tokenHash: hashToken(token) })
      return w
    })
    return reply.code(201).send({ workspace: workspaceBody(created), token })
  })

  app.patch('/api/v1/workspaces/:id', {
    preHandler: ctx.authenticate,
    schema: {
      tags: ['workspaces'], summary: 'Change a workspace\'s name or granted destination types',
      params: IdParams,
      body: Type.Object({ name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })), grantedDestinationTypes: Type.Optional(Type.Array(StringEnum(DESTINATION_TYPES), { uniqueItems: true })) }, { additionalProperties: false }),
      response: { 200: WorkspaceBody, ...errorResponses },
    },
  }, async (request) => {
    requireAdmin(request)
    const update: Partial<typeof workspaces.$inferInsert> = {}
    if (request.body.name !== undefined) update.name = request.body.name
    if (request.body.grantedDestinationTypes !== undefined) update.grantedDestinationTypes = request.body.grantedDestinationTypes
    const [row] = Object.keys(update).length === 0
      ? await ctx.db.select().from(workspaces).where(eq(workspaces.id, request.params.id))
      : await ctx.db.update(workspaces).set(update).where(eq(workspaces.id, request.params.id)).returning()
    if (row === undefined) throw new CloudPilotError('NOT_FOUND', `no workspace ${request.params.id}`)
    return workspaceBody(row)
  })
}
