import { and, desc, eq, isNull } from 'drizzle-orm'
import Type from 'typebox'
import { CloudPilotError, DESTINATION_SCHEMAS, normaliseErrorData, toErrorData, type DestinationTestResultFrame, type DestinationType } from '@cloudpilot/protocol'
import { openDestination, s3ConfigFromPreset, type S3PresetId } from '@cloudpilot/storage'
import type { App } from '../http/app.ts'
import type { CoordinatorContext } from '../context.ts'
import { destinations, plans, workspaces, type Destination, type DestinationTestResult } from '../db/schema.ts'
import { CreateDestination, DestinationBody, PatchDestination, TestResultBody } from '../http/schemas/destination.ts'
import { IdParams, ListOf, errorResponses } from '../http/schemas/common.ts'
import { destinationBody } from '../http/serialize.ts'
import { validateWith } from '../http/validate.ts'
import { destinationSpec } from '../services/job-builder.ts'
import { findServer } from './servers.ts'
import { checkDestinationEndpoints } from '../services/endpoint-policy.ts'

export function destinationRoutes (app: App, ctx: CoordinatorContext): void {
  app.get('/api/v1/destinations', {
    preHandler: ctx.authenticate,
    schema: { tags: ['destinations'], response: { 200: ListOf(DestinationBody), ...errorResponses } },
  }, async (request) => {
    const rows = await ctx.db.select().from(destinations)
      .where(and(eq(destinations.workspaceId, request.auth.workspaceId), isNull(destinations.deletedAt))).orderBy(desc(destinations.createdAt))
    return { items: rows.map(destinationBody), nextCursor: null }
  })

  app.post('/api/v1/destinations', {
    preHandler: ctx.authenticate,
    schema: { tags: ['destinations'], summary: 'Create a destination; credentials are write-only', body: CreateDestination, response: { 201: DestinationBody, ...errorResponses } },
  }, async (request, reply) => {
    const { name, type, config, credentials, active, preset } = request.body
    await requireGranted(ctx, request.auth.workspaceId, type)
    if (preset !== undefined && type !== 's3') throw new CloudPilotError('VALIDATION_FAILED', 'presets are for s3 destinations')
    const { id: presetId, ...presetInput } = preset ?? { id: undefined }
    const merged = presetId === undefined ? config : { ...s3ConfigFromPreset(presetId as S3PresetId, presetInput), ...config }
    const checked = checkDestination(ctx, type, merged, credentials ?? {})
    const [row] = await ctx.db.insert(destinations).values({
      workspaceId: request.auth.workspaceId, name, type, config: checked.config,
      credentialsEnc: Object.keys(checked.credentials).length === 0 ? null : ctx.secrets.sealJson(checked.credentials),
      active: active ?? true,
    }).returning()
    if (row === undefined) throw new Error('insert returned nothing')
    return reply.code(201).send(destinationBody(row))
  })

  app.get('/api/v1/destinations/:id', {
    preHandler: ctx.authenticate,
    schema: { tags: ['destinations'], params: IdParams, response: { 200: DestinationBody, ...errorResponses } },
  }, async (request) => destinationBody(await findDestination(ctx, request.auth.workspaceId, request.params.id)))

  app.patch('/api/v1/destinations/:id', {
    preHandler: ctx.authenticate,
    schema: { tags: ['destinations'], summary: 'Change name, config, credentials (replaced when given) or the active flag', params: IdParams, body: PatchDestination, response: { 200: DestinationBody, ...errorResponses } },
  }, async (request) => {
    const current = await findDestination(ctx, request.auth.workspaceId, request.params.id)
    const { name, config, credentials, active } = request.body
    const update: Partial<typeof destinations.$inferInsert> = { updatedAt: new Date() }
    if (name !== undefined) update.name = name
    if (active !== undefined) update.active = active
    if (config !== undefined || credentials !== undefined) {
      const oldCredentials = current.credentialsEnc === null ? {} : ctx.secrets.openJson<Record<string, unknown>>(current.credentialsEnc)
      const checked = checkDestination(ctx, current.type, config ?? current.config, credentials ?? oldCredentials)
      update.config = checked.config
      if (credentials !== undefined) update.credentialsEnc = Object.keys(checked.credentials).length === 0 ? null : ctx.secrets.sealJson(checked.credentials)
      update.lastTest = null
    }
    const [row] = await ctx.db.update(destinations).set(update).where(eq(destinations.id, current.id)).returning()
    if (row === undefined) throw new CloudPilotError('NOT_FOUND')
    return destinationBody(row)
  })

  app.delete('/api/v1/destinations/:id', {
    preHandler: ctx.authenticate,
    schema: { tags: ['destinations'], params: IdParams, response: { 204: Type.Null(), ...errorResponses } },
  }, async (request, reply) => {
    const current = await findDestination(ctx, request.auth.workspaceId, request.params.id)
    const [used] = await ctx.db.select({ id: plans.id }).from(plans).where(and(eq(plans.destinationId, current.id), isNull(plans.deletedAt))).limit(1)
    if (used !== undefined) throw new CloudPilotError('RESOURCE_IN_USE', 'plans still write to this destination', { hint: 'Point those plans at another destination (or delete them) first.' })
    // The row stays (soft delete) so old backups can still be downloaded, restored and expired.
    await ctx.db.update(destinations).set({ active: false, deletedAt: new Date(), updatedAt: new Date() }).where(eq(destinations.id, current.id))
    return reply.code(204).send(null)
  })

  app.post('/api/v1/destinations/:id/test', {
    preHandler: ctx.authenticate,
    schema: {
      tags: ['destinations'],
      summary: 'Test Connection: connect, write a probe object, read it back, delete it',
      description: 'Runs on the coordinator, or on a server\'s agent when serverId is given (a local destination is a directory on a server, so it is always tested there: on serverId, or on the server of a plan that uses it).',
      params: IdParams,
      body: Type.Optional(Type.Object({ serverId: Type.Optional(Type.String({ format: 'uuid' })) }, { additionalProperties: false })),
      response: { 200: TestResultBody, ...errorResponses },
    },
  }, async (request) => {
    const current = await findDestination(ctx, request.auth.workspaceId, request.params.id)
    let serverId = request.body?.serverId
    if (serverId !== undefined) await findServer(ctx, request.auth.workspaceId, serverId)
    if (serverId === undefined && current.type === 'local') {
      const [user] = await ctx.db.select({ serverId: plans.serverId }).from(plans).where(and(eq(plans.destinationId, current.id), isNull(plans.deletedAt))).limit(1)
      if (user === undefined) throw new CloudPilotError('VALIDATION_FAILED', 'a local destination is a directory on a server: pass the serverId to test it on')
      serverId = user.serverId
    }
    const result = serverId === undefined ? await testDestination(ctx, current) : await testDestinationOnServer(ctx, current, serverId)
    const update: Partial<typeof destinations.$inferInsert> = { lastTest: result }
    // SFTP trust-on-first-use (an explicit opt-in): the key seen by a successful test is pinned from now on.
    if (current.type === 'sftp' && result.ok && result.hostKeyFingerprint !== undefined && current.config.trustOnFirstUse === true && current.config.hostKeyFingerprint === undefined) {
      update.config = { ...current.config, hostKeyFingerprint: result.hostKeyFingerprint, trustOnFirstUse: false }
    }
    await ctx.db.update(destinations).set(update).where(eq(destinations.id, current.id))
    const { at: _at, ...body } = result
    return body
  })
}

/** Test Connection from the coordinator. Never throws: failures are the result. */
export async function testDestination (ctx: CoordinatorContext, destination: Destination): Promise<DestinationTestResult> {
  const at = new Date().toISOString()
  try {
    const driver = await openDestination(destinationSpec(destination, ctx.secrets), { allowPrivateEndpoints: ctx.config.allowPrivateEndpoints })
    try {
      const { latencyMs, hostKeyFingerprint } = await driver.test({ signal: AbortSignal.timeout(60_000) })
      return { ok: true, latencyMs, ...(hostKeyFingerprint === undefined ? {} : { hostKeyFingerprint }), at }
    } finally {
      await driver.close().catch(() => {})
    }
  } catch (err) {
    return { ok: false, error: toErrorData(err, 'UNREACHABLE'), at }
  }
}

/** Test Connection run by a server's agent. An unreachable agent is an API error, not a destination result. */
async function testDestinationOnServer (ctx: CoordinatorContext, destination: Destination, serverId: string): Promise<DestinationTestResult> {
  const at = new Date().toISOString()
  const answer = await ctx.requests.request<DestinationTestResultFrame>(serverId, {
    type: 'destination.test', destination: destinationSpec(destination, ctx.secrets, ctx.config.allowPrivateEndpoints),
  }, { what: 'destination test', timeoutMs: 90_000 })
  if (answer.ok) return { ok: true, ...(answer.latencyMs === undefined ? {} : { latencyMs: answer.latencyMs }), ...(answer.hostKeyFingerprint === undefined ? {} : { hostKeyFingerprint: answer.hostKeyFingerprint }), at }
  return { ok: false, error: normaliseErrorData(answer.error ?? { code: 'INTERNAL', message: 'the agent reported a failure without details' }), at }
}

export async function findDestination (ctx: CoordinatorContext, workspaceId: string, id: string): Promise<Destination> {
  const [row] = await ctx.db.select().from(destinations).where(and(eq(destinations.id, id), eq(destinations.workspaceId, workspaceId), isNull(destinations.deletedAt)))
  if (row === undefined) throw new CloudPilotError('NOT_FOUND', `no destination ${id}`)
  return row
}

async function requireGranted (ctx: CoordinatorContext, workspaceId: string, type: DestinationType): Promise<void> {
  const [ws] = await ctx.db.select({ granted: workspaces.grantedDestinationTypes }).from(workspaces).where(eq(workspaces.id, workspaceId))
  if (ws === undefined || !ws.granted.includes(type)) {
    throw new CloudPilotError('DESTINATION_TYPE_NOT_GRANTED', `this workspace may not use ${type} destinations`)
  }
}

function checkDestination (ctx: CoordinatorContext, type: DestinationType, config: Record<string, unknown>, credentials: Record<string, unknown>) {
  const schemas = DESTINATION_SCHEMAS[type]
  const checked = {
    config: validateWith(schemas.config, config, 'config') as Record<string, unknown>,
    credentials: validateWith(schemas.credentials, credentials, 'credentials') as Record<string, unknown>,
  }
  checkDestinationEndpoints(type, checked.config, ctx.config.allowPrivateEndpoints)
  return checked
}
