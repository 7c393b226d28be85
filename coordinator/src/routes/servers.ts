import { and, desc, eq, isNull, lt, or } from 'drizzle-orm'
import { CloseCode, CloudPilotError } from '@cloudpilot/protocol'
import Type from 'typebox'
import type { App } from '../http/app.ts'
import type { CoordinatorContext } from '../context.ts'
import { servers } from '../db/schema.ts'
import { ServerBody, UpgradeRequest, UpgradeResult } from '../http/schemas/server.ts'
import { agentPackagesOf } from '../services/agent-packages.ts'
import { requestUpgrade } from '../services/agent-upgrades.ts'
import { IdParams, ListOf, ListQuery, errorResponses } from '../http/schemas/common.ts'
import { serverBody } from '../http/serialize.ts'
import { decodeCursor, encodeCursor } from '../http/cursor.ts'

export function serverRoutes (app: App, ctx: CoordinatorContext): void {
  app.get('/api/v1/servers', {
    preHandler: ctx.authenticate,
    schema: { tags: ['servers'], summary: 'Servers with status, lastSeenAt, agent version and tools', querystring: Type.Object(ListQuery), response: { 200: ListOf(ServerBody), ...errorResponses } },
  }, async (request) => {
    const limit = request.query.limit ?? 50
    const cursor = decodeCursor(request.query.cursor)
    const rows = await ctx.db.select().from(servers)
      .where(and(eq(servers.workspaceId, request.auth.workspaceId), isNull(servers.revokedAt),
        cursor === null ? undefined : or(lt(servers.createdAt, cursor.at), and(eq(servers.createdAt, cursor.at), lt(servers.id, cursor.id)))))
      .orderBy(desc(servers.createdAt), desc(servers.id)).limit(limit + 1)
    const page = rows.slice(0, limit)
    const last = page.at(-1)
    return { items: page.map(serverBody), nextCursor: rows.length > limit && last !== undefined ? encodeCursor(last.createdAt, last.id) : null }
  })

  app.get('/api/v1/servers/:id', {
    preHandler: ctx.authenticate,
    schema: { tags: ['servers'], params: IdParams, response: { 200: ServerBody, ...errorResponses } },
  }, async (request) => serverBody(await findServer(ctx, request.auth.workspaceId, request.params.id)))

  const packages = agentPackagesOf(ctx)
  const checkVersion = async (wanted: string | undefined): Promise<string> => {
    const { version } = await packages.manifest()
    if (wanted !== undefined && wanted !== version) throw new CloudPilotError('CONFLICT', `the coordinator serves agent ${version}, not ${wanted}`, { hint: 'Publish that version in CLOUDPILOT_AGENT_PACKAGE_DIR first, or omit "version".' })
    return version
  }

  app.post('/api/v1/servers/:id/upgrade', {
    preHandler: ctx.authenticate,
    schema: {
      tags: ['servers'], summary: 'Upgrade the server\'s agent to the coordinator\'s agent package (progress and outcome in the server\'s upgrade field)',
      params: IdParams, body: Type.Optional(UpgradeRequest), response: { 202: UpgradeResult, ...errorResponses },
    },
  }, async (request, reply) => {
    const targetVersion = await checkVersion(request.body?.version)
    const server = await findServer(ctx, request.auth.workspaceId, request.params.id)
    const { outcome } = await requestUpgrade({ db: ctx.db, hub: ctx.hub, packages }, server)
    request.log.info({ serverId: server.id, targetVersion, outcome }, 'agent upgrade')
    return reply.code(202).send({ serverId: server.id, outcome, targetVersion })
  })

  app.post('/api/v1/servers/upgrade', {
    preHandler: ctx.authenticate,
    schema: {
      tags: ['servers'], summary: 'Upgrade the agents of all servers of the workspace (those connected now)',
      body: Type.Optional(UpgradeRequest), response: { 202: Type.Object({ items: Type.Array(UpgradeResult) }), ...errorResponses },
    },
  }, async (request, reply) => {
    const targetVersion = await checkVersion(request.body?.version)
    const rows = await ctx.db.select().from(servers).where(and(eq(servers.workspaceId, request.auth.workspaceId), isNull(servers.revokedAt)))
    const items: Array<{ serverId: string, outcome: 'requested' | 'current' | 'unreachable' | 'no_package', targetVersion: string }> = []
    for (const server of rows) {
      try {
        const { outcome } = await requestUpgrade({ db: ctx.db, hub: ctx.hub, packages }, server)
        items.push({ serverId: server.id, outcome, targetVersion })
      } catch (err) {
        if (err instanceof CloudPilotError && err.code === 'AGENT_UNREACHABLE') items.push({ serverId: server.id, outcome: 'unreachable', targetVersion })
        else if (err instanceof CloudPilotError && err.code === 'AGENT_PACKAGE_UNAVAILABLE') items.push({ serverId: server.id, outcome: 'no_package', targetVersion })
        else throw err
      }
    }
    request.log.info({ targetVersion, requested: items.filter((i) => i.outcome === 'requested').length }, 'agent upgrade of all servers')
    return reply.code(202).send({ items })
  })

  app.delete('/api/v1/servers/:id', {
    preHandler: ctx.authenticate,
    schema: { tags: ['servers'], summary: 'Revoke the server: its credential stops working and its live socket is closed at once', params: IdParams, response: { 204: Type.Null(), ...errorResponses } },
  }, async (request, reply) => {
    const server = await findServer(ctx, request.auth.workspaceId, request.params.id)
    await revokeServer(ctx, server.id)
    request.log.info({ serverId: server.id }, 'server revoked')
    return reply.code(204).send(null)
  })
}

/** Revokes a server: its credential stops working, its live socket closes at once, its open jobs fail. */
export async function revokeServer (ctx: CoordinatorContext, serverId: string): Promise<void> {
  await ctx.db.update(servers).set({ revokedAt: new Date(), credentialHash: null, status: 'offline' }).where(eq(servers.id, serverId))
  ctx.hub.disconnect(serverId, CloseCode.SERVER_REVOKED, 'server revoked')
  const revoked = new CloudPilotError('AGENT_LOST', 'the server was revoked while the job was pending or running').toData()
  await ctx.records.failOpenOfServers([serverId], revoked)
  await ctx.restores.failOpenOfServers([serverId], revoked)
}

export async function findServer (ctx: CoordinatorContext, workspaceId: string, id: string) {
  const [row] = await ctx.db.select().from(servers).where(and(eq(servers.id, id), eq(servers.workspaceId, workspaceId), isNull(servers.revokedAt)))
  if (row === undefined) throw new CloudPilotError('NOT_FOUND', `no server ${id}`)
  return row
}
