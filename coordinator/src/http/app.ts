import Fastify, { type FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { Logger } from 'pino'
import { PRODUCT_VERSION } from '@cloudpilot/protocol'
import { installErrorHandler } from './error-handler.ts'

export type App = FastifyInstance<any, any, any, Logger, TypeBoxTypeProvider>

/** The fastify instance with validation settings, OpenAPI at /docs and the error format. Routes are added by the caller. */
export async function createHttpApp (options: { log: Logger }): Promise<App> {
  const app = Fastify({
    loggerInstance: options.log,
    bodyLimit: 1024 * 1024,
    requestIdHeader: 'x-request-id',
    ajv: {
      // Reject unknown properties instead of silently dropping them, and never coerce bodies.
      customOptions: { removeAdditional: false, coerceTypes: 'array', useDefaults: true, allErrors: false },
    },
  }).withTypeProvider<TypeBoxTypeProvider>()

  installErrorHandler(app)

  const { default: swagger } = await import('@fastify/swagger')
  const { default: swaggerUi } = await import('@fastify/swagger-ui')
  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: 'CloudPilot Backup API', version: PRODUCT_VERSION, description: 'Coordinator HTTP API (v1). Authenticate with `Authorization: Bearer <api token>`.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  })
  await app.register(swaggerUi, { routePrefix: '/docs' })
  return app as unknown as App
}
