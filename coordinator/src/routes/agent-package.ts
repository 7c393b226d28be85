import Type from 'typebox'
import { CloudPilotError } from '@cloudpilot/protocol'
import type { App } from '../http/app.ts'
import type { CoordinatorContext } from '../context.ts'
import { errorResponses } from '../http/schemas/common.ts'
import { agentPackagesOf } from '../services/agent-packages.ts'

const PackageFile = Type.Object({ name: Type.String(), sha256: Type.String(), size: Type.Integer() })

/** The agent package, public (it holds no secret): what install.sh downloads and agents upgrade to. */
export function agentPackageRoutes (app: App, ctx: CoordinatorContext): void {
  const packages = agentPackagesOf(ctx)

  app.get('/agent/manifest.json', {
    schema: {
      tags: ['servers'], summary: 'The agent package: version, and per architecture the file name, sha256 and size', security: [],
      response: { 200: Type.Object({ version: Type.String(), nodeVersion: Type.String(), builtAt: Type.String(), files: Type.Record(Type.String(), PackageFile) }), ...errorResponses },
    },
  }, async () => await packages.manifest())

  app.get('/agent/manifest.txt', { schema: { hide: true } }, async (_request, reply) => {
    return reply.type('text/plain; charset=utf-8').header('cache-control', 'no-store').send(await packages.manifestText())
  })

  app.get('/agent/files/:name', {
    schema: { tags: ['servers'], summary: 'An agent package file listed in the manifest', security: [], params: Type.Object({ name: Type.String({ maxLength: 200 }) }) },
  }, async (request, reply) => {
    const file = await packages.open(request.params.name)
    if (file === null) throw new CloudPilotError('NOT_FOUND', `no agent package file ${request.params.name}`)
    return reply.type('application/gzip').header('content-length', String(file.size)).send(file.stream)
  })
}
