import { CloudPilotError, ERRORS, type ErrorCode } from '@cloudpilot/protocol'
import { isAbortError, networkErrorCode } from './node-error-map.ts'
import { redact } from './redact.ts'

/**
 * S3 (and S3-compatible) failures mapped onto the destination troubleshooting table. The SDK names a service
 * error after its S3 error code (`err.name === 'NoSuchBucket'`); HEAD answers carry no body, so for them only the
 * HTTP status is known.
 */

export type S3Operation = 'put' | 'get' | 'stat' | 'delete' | 'list' | 'test'

export interface S3ErrorContext {
  op: S3Operation
  bucket: string
  /** Full object key (with the destination prefix), when the call concerns one object. */
  objectKey?: string
  /** host[:port] of the endpoint, for UNREACHABLE/TLS messages. */
  host: string
  /** Values that must never appear in a message (secret key, session token). */
  secrets: readonly string[]
}

const CREDENTIALS = new Set(['InvalidAccessKeyId', 'SignatureDoesNotMatch', 'InvalidToken', 'ExpiredToken', 'TokenRefreshRequired', 'InvalidClientTokenId', 'UnrecognizedClientException', 'InvalidSecurity', 'MissingSecurityHeader'])
const PERMISSION = new Set(['AccessDenied', 'AllAccessDisabled', 'AccountProblem', 'Forbidden', 'NotSignedUp'])
const BUCKET = new Set(['NoSuchBucket', 'InvalidBucketName'])
const REGION = new Set(['PermanentRedirect', 'AuthorizationHeaderMalformed', 'IllegalLocationConstraintException', 'TemporaryRedirect'])
const OBJECT = new Set(['NoSuchKey'])
const SPACE = new Set(['XMinioStorageFull', 'QuotaExceeded', 'StorageFull', 'InsufficientStorage', 'XMinioAdminBucketQuotaExceeded'])

const PERMISSION_HINT = 'The credentials were accepted but may not do this: grant s3:PutObject, s3:GetObject, s3:DeleteObject and s3:ListBucket on the bucket (and prefix), and check bucket policies.'
const REGION_HINT = 'The bucket is in another region or needs another endpoint: set region (and endpoint) to the bucket\'s own.'
const BUCKET_HINT = 'Create the bucket or fix its name (and region/endpoint); the credentials must also be allowed to list it.'

interface SdkErrorShape {
  name?: unknown
  message?: unknown
  code?: unknown
  $metadata?: { httpStatusCode?: number, attempts?: number }
}

export function s3StatusOf (err: unknown): number | undefined {
  const status = (err as SdkErrorShape | null)?.$metadata?.httpStatusCode
  return typeof status === 'number' ? status : undefined
}

/** The S3 error code the SDK put in `name`; '' when the answer had none (a HEAD has no body). */
export function s3NameOf (err: unknown): string {
  const name = (err as SdkErrorShape | null)?.name
  if (typeof name !== 'string' || name === 'Unknown' || name === 'UnknownError' || name === 'Error') return ''
  return name
}

export { redact }

function findCloudPilotError (err: unknown): CloudPilotError | undefined {
  let current: unknown = err
  for (let depth = 0; depth < 5 && current !== undefined && current !== null; depth++) {
    if (current instanceof CloudPilotError) return current
    current = (current as { cause?: unknown }).cause
  }
  return undefined
}

/** Maps any failure of an S3 call to a CloudPilotError; an AbortError is returned unchanged. */
export function mapS3Error (err: unknown, ctx: S3ErrorContext): Error {
  if (isAbortError(err)) return err as Error
  const own = findCloudPilotError(err)
  if (own !== undefined) return own
  const where = ctx.objectKey === undefined ? `s3://${ctx.bucket}` : `s3://${ctx.bucket}/${ctx.objectKey}`
  const status = s3StatusOf(err)
  const name = s3NameOf(err)
  const raw = err instanceof Error ? err.message : String(err)
  const detail = redact(raw === '' || raw === 'Unknown' || raw === 'UnknownError' ? (name !== '' ? name : `HTTP ${status ?? '?'}`) : raw, ctx.secrets)
  const make = (code: ErrorCode, message: string, hint?: string): CloudPilotError => new CloudPilotError(code, redact(message, ctx.secrets), hint === undefined ? { cause: err } : { cause: err, hint })

  if (status !== undefined) {
    if (CREDENTIALS.has(name)) return make('AUTH_FAILED', `${ctx.op} ${where}: the destination rejected the credentials (${name}): ${detail}`)
    if (REGION.has(name) || status === 301) return make('CONTAINER_NOT_FOUND', `${ctx.op} ${where}: wrong region or endpoint for this bucket (${name || status}): ${detail}`, REGION_HINT)
    if (BUCKET.has(name)) return make('CONTAINER_NOT_FOUND', `${ctx.op} ${where}: bucket ${ctx.bucket} does not exist (${name})`, BUCKET_HINT)
    if (OBJECT.has(name)) return make('OBJECT_NOT_FOUND', `${ctx.op} ${where}: no such object`)
    if (SPACE.has(name) || status === 507) return make('NO_SPACE', `${ctx.op} ${where}: the destination is out of space or quota (${name || status}): ${detail}`, 'Free space or raise the quota on the destination, or shorten retention.')
    if (PERMISSION.has(name)) return make('AUTH_FAILED', `${ctx.op} ${where}: access denied (${name}): ${detail}`, PERMISSION_HINT)
    // A 403 without an error code (HEAD answers have no body): bad credentials or missing permission.
    if (status === 403) return make('AUTH_FAILED', `${ctx.op} ${where}: access denied (HTTP 403)`, `${ERRORS.AUTH_FAILED.hint} ${PERMISSION_HINT}`)
    if (status === 401) return make('AUTH_FAILED', `${ctx.op} ${where}: the destination rejected the credentials (${status}): ${detail}`)
    if (status === 404) {
      if (ctx.op === 'get' || ctx.op === 'stat') return make('OBJECT_NOT_FOUND', `${ctx.op} ${where}: no such object`)
      return make('CONTAINER_NOT_FOUND', `${ctx.op} ${where}: bucket ${ctx.bucket} not found (404)`, BUCKET_HINT)
    }
    return make('UPLOAD_FAILED', `${ctx.op} ${where}: ${name !== '' ? name + ': ' : ''}${detail} (HTTP ${status})`)
  }

  const network = networkErrorCode(err) ?? (name === 'TimeoutError' ? 'UNREACHABLE' : undefined)
  if (network === 'UNREACHABLE') return make('UNREACHABLE', `${ctx.op} ${where}: cannot reach the S3 endpoint ${ctx.host}: ${detail}`)
  if (network === 'TLS_ERROR') return make('TLS_ERROR', `${ctx.op} ${where}: TLS with ${ctx.host} failed: ${detail}`)
  return make('UPLOAD_FAILED', `${ctx.op} ${where}: ${detail}`)
}
