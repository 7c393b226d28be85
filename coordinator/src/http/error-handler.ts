import type { FastifyError, FastifyInstance } from 'fastify'
import { CloudPilotError, ERRORS } from '@cloudpilot/protocol'

/** Every error answers `{error: {code, message, hint}}` with a stable code from the registry. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function installErrorHandler (app: FastifyInstance<any, any, any, any, any>): void {
  app.setErrorHandler((err: FastifyError | CloudPilotError | Error, request, reply) => {
    if (err instanceof CloudPilotError) {
      if (err.status >= 500) request.log.error({ err }, 'request failed')
      return reply.code(err.status).send({ error: { code: err.code, message: err.message, hint: err.hint } })
    }
    const fe = err as FastifyError
    if (fe.validation !== undefined) {
      const message = `${fe.validationContext ?? 'request'}: ${fe.message}`
      return reply.code(400).send({ error: { code: 'VALIDATION_FAILED', message, hint: ERRORS.VALIDATION_FAILED.hint } })
    }
    if (fe.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      return reply.code(413).send({ error: { code: 'PAYLOAD_TOO_LARGE', message: fe.message, hint: ERRORS.PAYLOAD_TOO_LARGE.hint } })
    }
    if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
      return reply.code(fe.statusCode).send({ error: { code: 'VALIDATION_FAILED', message: fe.message, hint: ERRORS.VALIDATION_FAILED.hint } })
    }
    request.log.error({ err }, 'unhandled error')
    return reply.code(500).send({ error: { code: 'INTERNAL', message: 'internal error', hint: `${ERRORS.INTERNAL.hint} (request id ${request.id})` } })
  })
  app.setNotFoundHandler((request, reply) => {
    return reply.code(404).send({ error: { code: 'NOT_FOUND', message: `no route ${request.method} ${request.url.split('?')[0] ?? ''}`, hint: 'See the API reference at /docs.' } })
  })
}
