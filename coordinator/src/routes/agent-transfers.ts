import { finished } from 'node:stream/promises'
import { and, eq, isNull } from 'drizzle-orm'
import Type from 'typebox'
import { CloudPilotError } from '@cloudpilot/protocol'
import type { App } from '../http/app.ts'
import type { CoordinatorContext } from '../context.ts'
import { servers } from '../db/schema.ts'
import { bearerToken } from '../auth/api-auth.ts'
import { hashToken } from '../crypto/tokens.ts'

/**
 * PUT /agent/transfers/:id — an agent sends the bytes of a file the coordinator asked for (transfer.send).
 * Authenticated by the agent credential (Authorization) and the transfer's single-use token (x-transfer-token).
 * The body is not buffered: it is relayed to the waiting download as it arrives.
 */
export function agentTransferRoutes (app: App, ctx: CoordinatorContext): void {
  app.register(async (scope) => {
    // Leave the body unread: the handler streams it.
    scope.removeAllContentTypeParsers()
    scope.addContentTypeParser('*', (_req, _payload, done) => { done(null) })
    scope.put('/agent/transfers/:id', {
      schema: { hide: true, params: Type.Object({ id: Type.String({ format: 'uuid' }) }) },
    }, async (request, reply) => {
      const credential = bearerToken(request.headers.authorization)
      const token = request.headers['x-transfer-token']
      const [server] = credential === null ? [] : await ctx.db.select({ id: servers.id }).from(servers)
        .where(and(eq(servers.credentialHash, hashToken(credential)), isNull(servers.revokedAt)))
      if (server === undefined || typeof token !== 'string') throw new CloudPilotError('AGENT_CREDENTIAL_INVALID')
      if (!ctx.transfers.accept((request.params as { id: string }).id, server.id, token, request.raw)) {
        throw new CloudPilotError('NOT_FOUND', 'no such transfer waiting (expired, already used, or for another server)')
      }
      await finished(request.raw).catch(() => {})
      return reply.code(204).send()
    })
  })
}
