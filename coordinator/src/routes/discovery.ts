import type { DatabaseConnection } from '@cloudpilot/protocol'
import type { App } from '../http/app.ts'
import type { CoordinatorContext } from '../context.ts'
import { DiscoverRequest, DiscoverResponse } from '../http/schemas/discovery.ts'
import { IdParams, errorResponses } from '../http/schemas/common.ts'
import { ErrorBody } from '../http/schemas/common.ts'
import { findServer } from './servers.ts'

export function discoveryRoutes (app: App, ctx: CoordinatorContext): void {
  app.post('/api/v1/servers/:id/discover-databases', {
    preHandler: ctx.authenticate,
    schema: {
      tags: ['servers'],
      summary: 'List the databases the server\'s agent sees with the given connection (system databases flagged). Errors: AGENT_UNREACHABLE, ACCESS_DENIED, CLIENT_MISSING, NO_DATABASES, SOURCE_UNREACHABLE. The password is used for this call only.',
      params: IdParams, body: DiscoverRequest, response: { 200: DiscoverResponse, ...errorResponses, 504: ErrorBody },
    },
  }, async (request) => {
    const server = await findServer(ctx, request.auth.workspaceId, request.params.id)
    const connection: DatabaseConnection = { engine: request.body.engine, ...request.body.connection }
    const databases = await ctx.discovery.discover(server.id, connection)
    return { databases }
  })
}
