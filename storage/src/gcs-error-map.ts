import { CloudPilotError, ERRORS, type ErrorCode } from '@cloudpilot/protocol'
import { isAbortError, networkErrorCode } from './node-error-map.ts'
import { redact } from './redact.ts'

/**
 * Google Cloud Storage failures mapped onto the destination troubleshooting table. The SDK's ApiError carries the
 * HTTP status as `code` and the JSON API's `errors[].reason`
 * (https://cloud.google.com/storage/docs/json_api/v1/status-codes). A 404 names what is missing in its message:
 * "The specified bucket does not exist." or "No such object: bucket/name".
 */

export type GcsOperation = 'put' | 'get' | 'stat' | 'delete' | 'list' | 'test'

export interface GcsErrorContext {
  op: GcsOperation
  bucket: string
  object?: string
  endpoint: string
  secrets: readonly string[]
  callerAborted: boolean
}

export const GCS_PERMISSION_HINT = 'The service account may not do this: grant it the Storage Object Admin role (roles/storage.objectAdmin) on the bucket, or at least storage.objects.create, get, list and delete.'
const BUCKET_HINT = 'Create the bucket or fix its name; the service account must also be allowed to list it.'

interface ApiErrorShape { code?: unknown, message?: unknown, errors?: unknown, response?: { status?: unknown } }

export function gcsStatusOf (err: unknown): number | undefined {
  const e = err as ApiErrorShape | null
  if (typeof e?.code === 'number' && e.code >= 100 && e.code < 600) return e.code
  const status = e?.response?.status
  return typeof status === 'number' ? status : undefined
}

export function gcsReasonOf (err: unknown): string {
  const errors = (err as ApiErrorShape | null)?.errors
  if (!Array.isArray(errors)) return ''
  const reason = (errors[0] as { reason?: unknown } | undefined)?.reason
  return typeof reason === 'string' ? reason : ''
}

export function isBucketMissing (err: unknown): boolean {
  const message = (err as ApiErrorShape | null)?.message
  return gcsStatusOf(err) === 404 && typeof message === 'string' && /bucket does not exist/i.test(message)
}

function findCloudPilotError (err: unknown): CloudPilotError | undefined {
  let current: unknown = err
  for (let depth = 0; depth < 6 && current !== undefined && current !== null; depth++) {
    if (current instanceof CloudPilotError) return current
    const e = current as { cause?: unknown, originalError?: unknown, error?: unknown }
    current = e.cause ?? e.originalError ?? (e.error instanceof Error ? e.error : undefined)
  }
  return undefined
}

export function mapGcsError (err: unknown, ctx: GcsErrorContext): Error {
  if (isAbortError(err) && ctx.callerAborted) return err as Error
  const own = findCloudPilotError(err)
  if (own !== undefined) return own
  const where = ctx.object === undefined ? `gs://${ctx.bucket}` : `gs://${ctx.bucket}/${ctx.object}`
  const status = gcsStatusOf(err)
  const reason = gcsReasonOf(err)
  const raw = err instanceof Error ? err.message : String(err)
  const detail = redact(raw.split('\n')[0] ?? '', ctx.secrets)
  const make = (code: ErrorCode, message: string, options: { hint?: string, retryable?: boolean } = {}): CloudPilotError =>
    new CloudPilotError(code, redact(message, ctx.secrets), { cause: err, ...options })

  if (status !== undefined) {
    if (status === 401) return make('AUTH_FAILED', `${ctx.op} ${where}: the access token was refused (${detail})`, { hint: ERRORS.AUTH_FAILED.hint })
    if (status === 403 && /rateLimitExceeded|userRateLimitExceeded|quotaExceeded/.test(reason)) return make('UPLOAD_FAILED', `${ctx.op} ${where}: rate limited (${reason})`, { retryable: true })
    if (status === 403) return make('AUTH_FAILED', `${ctx.op} ${where}: access denied (${detail})`, { hint: GCS_PERMISSION_HINT })
    if (isBucketMissing(err)) return make('CONTAINER_NOT_FOUND', `${ctx.op} ${where}: bucket ${ctx.bucket} does not exist`, { hint: BUCKET_HINT })
    if (status === 404 && (ctx.op === 'get' || ctx.op === 'stat')) return make('OBJECT_NOT_FOUND', `${ctx.op} ${where}: no such object`)
    if (status === 404) return make('CONTAINER_NOT_FOUND', `${ctx.op} ${where}: not found (${detail})`, { hint: BUCKET_HINT })
    const transient = status === 408 || status === 429 || status >= 500
    return make('UPLOAD_FAILED', `${ctx.op} ${where}: ${reason === '' ? '' : reason + ': '}${detail} (HTTP ${status})`, { retryable: transient })
  }
  const network = networkErrorCode(err)
  if (network === 'TLS_ERROR') return make('TLS_ERROR', `${ctx.op} ${where}: TLS with ${ctx.endpoint} failed: ${detail}`)
  if (network === 'UNREACHABLE' || isAbortError(err) || /timeout|timed out|socket hang up/i.test(raw)) {
    return make('UNREACHABLE', `${ctx.op} ${where}: cannot reach ${ctx.endpoint}: ${detail}`, { retryable: true })
  }
  return make('UPLOAD_FAILED', `${ctx.op} ${where}: ${detail}`, { retryable: false })
}
