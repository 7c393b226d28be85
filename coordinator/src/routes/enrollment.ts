import { and, eq, isNull, gt } from 'drizzle-orm'
import { CloudPilotError } from '@cloudpilot/protocol'
import type { App } from '../http/app.ts'
import type { CoordinatorContext } from '../context.ts'
import { enrollmentTokens, servers } from '../db/schema.ts'
import { hashToken, newToken } from '../crypto/tokens.ts'
import { EnrollmentTokenBody, EnrollmentTokenRequest, EnrollRequest, EnrollResponse } from '../http/schemas/server.ts'
import { errorResponses } from '../http/schemas/common.ts'
import Type from 'typebox'
import { revokeServer } from './servers.ts'

/** Enrollment: single-use, expiring tokens exchanged by the agent for its own credential (only hashes stored). */
export function enrollmentRoutes (app: App, ctx: CoordinatorContext): void {
  app.post('/api/v1/enrollment-tokens', {
    preHandler: ctx.authenticate,
    schema: {
      tags: ['servers'], summary: 'New single-use enrollment token and the one-line install command',
      body: EnrollmentTokenRequest, response: { 201: EnrollmentTokenBody, ...errorResponses },
    },
  }, async (request, reply) => {
    const body = request.body ?? {}
    const token = newToken('enrollment')
    const ttl = body.expiresInSeconds ?? ctx.config.enrollmentTokenTtlSeconds
    const expiresAt = new Date(Date.now() + ttl * 1000)
    await ctx.db.insert(enrollmentTokens).values({ workspaceId: request.auth.workspaceId, tokenHash: hashToken(token), expiresAt, serverName: body.name ?? null })
    const base = ctx.publicUrl()
    return reply.code(201).send({
      token,
      expiresAt: expiresAt.toISOString(),
      installCommand: `curl -fsSL ${base}/install.sh | sudo bash -s -- --token ${token}`,
    })
  })

  app.post('/api/v1/agents/enroll', {
    schema: {
      tags: ['servers'], summary: 'Exchange an enrollment token for the agent credential (no API token needed)', security: [],
      body: EnrollRequest, response: { 201: EnrollResponse, ...errorResponses },
    },
  }, async (request, reply) => {
    const hash = hashToken(request.body.token)
    const credential = newToken('agent')
    const result = await ctx.db.transaction(async (tx) => {
      const [claimed] = await tx.update(enrollmentTokens).set({ usedAt: new Date() })
        .where(and(eq(enrollmentTokens.tokenHash, hash), isNull(enrollmentTokens.usedAt), gt(enrollmentTokens.expiresAt, new Date())))
        .returning()
      if (claimed === undefined) {
        const [known] = await tx.select().from(enrollmentTokens).where(eq(enrollmentTokens.tokenHash, hash))
        if (known === undefined) throw new CloudPilotError('ENROLLMENT_TOKEN_INVALID')
        if (known.usedAt !== null) throw new CloudPilotError('ENROLLMENT_TOKEN_USED')
        throw new CloudPilotError('ENROLLMENT_TOKEN_EXPIRED')
      }
      const hostname = request.body.hostname ?? null
      const [server] = await tx.insert(servers).values({
        workspaceId: claimed.workspaceId,
        name: claimed.serverName ?? hostname ?? 'server',
        hostname,
        credentialHash: hashToken(credential),
      }).returning()
      if (server === undefined) throw new Error('server insert returned nothing')
      await tx.update(enrollmentTokens).set({ serverId: server.id }).where(eq(enrollmentTokens.id, claimed.id))
      return server
    })
    request.log.info({ serverId: result.id }, 'server enrolled')
    return reply.code(201).send({ serverId: result.id, agentCredential: credential })
  })

  app.post('/api/v1/agents/revoke', {
    schema: {
      tags: ['servers'], summary: 'An agent revokes its own server (uninstall), authenticated by its agent credential', security: [],
      response: { 204: Type.Null(), ...errorResponses },
    },
  }, async (request, reply) => {
    const header = request.headers.authorization ?? ''
    const credential = header.startsWith('Bearer ') ? header.slice(7).trim() : ''
    if (credential === '') throw new CloudPilotError('AGENT_CREDENTIAL_INVALID')
    const [server] = await ctx.db.select({ id: servers.id }).from(servers)
      .where(and(eq(servers.credentialHash, hashToken(credential)), isNull(servers.revokedAt)))
    if (server === undefined) throw new CloudPilotError('AGENT_CREDENTIAL_INVALID')
    await revokeServer(ctx, server.id)
    request.log.info({ serverId: server.id }, 'server revoked by its agent (uninstall)')
    return reply.code(204).send(null)
  })
}
