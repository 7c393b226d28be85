import { CloudPilotError, ERRORS, type ErrorCode } from '@cloudpilot/protocol'
import { isAbortError, networkErrorCode } from './node-error-map.ts'
import { redact } from './redact.ts'

/**
 * Azure Blob failures mapped onto the destination troubleshooting table. The SDK throws a RestError with the HTTP
 * `statusCode` and the service's error code (`code`, or for HEAD answers, which have no body, only
 * `details.errorCode` from the x-ms-error-code header; a HEAD refused for bad credentials carries neither).
 * Error codes: https://learn.microsoft.com/rest/api/storageservices/blob-service-error-codes and
 * .../common-rest-api-error-codes.
 */

export type AzureOperation = 'put' | 'get' | 'stat' | 'delete' | 'list' | 'test'

export interface AzureErrorContext {
  op: AzureOperation
  container: string
  blob?: string
  /** scheme://host[:port] of the account endpoint. */
  endpoint: string
  secrets: readonly string[]
  /** Whether the caller's signal fired: an AbortError is then the caller's, otherwise the SDK's own try timeout. */
  callerAborted: boolean
}

const CREDENTIALS = new Set(['AuthenticationFailed', 'InvalidAuthenticationInfo', 'NoAuthenticationInformation', 'AuthorizationFailure'])
const PERMISSION = new Set(['AuthorizationPermissionMismatch', 'AuthorizationResourceTypeMismatch', 'AuthorizationServiceMismatch', 'AuthorizationProtocolMismatch', 'AuthorizationSourceIPMismatch', 'InsufficientAccountPermissions', 'AccountIsDisabled', 'KeyBasedAuthenticationNotPermitted'])
const CONTAINER = new Set(['ContainerNotFound', 'ContainerBeingDeleted', 'ContainerDisabled'])
const BLOB = new Set(['BlobNotFound'])
const SPACE = new Set(['AccountLimitExceeded'])

export const AZURE_PERMISSION_HINT = 'The credentials were accepted but may not do this: a SAS token needs read, add, create, write, delete and list permissions (sp=racwdl) on the container and must not be expired; a role assignment needs Storage Blob Data Contributor.'
const CONTAINER_HINT = 'Create the container (or fix its name); the credentials must also be allowed to list it.'

interface RestErrorShape {
  statusCode?: unknown
  code?: unknown
  details?: { errorCode?: unknown } | unknown
  message?: unknown
}

export function azureStatusOf (err: unknown): number | undefined {
  const status = (err as RestErrorShape | null)?.statusCode
  return typeof status === 'number' ? status : undefined
}

/** The service's error code: the body's, else the x-ms-error-code header's (HEAD answers). */
export function azureCodeOf (err: unknown): string {
  const e = err as RestErrorShape | null
  const details = e?.details as { errorCode?: unknown } | undefined
  if (typeof details?.errorCode === 'string' && details.errorCode !== '') return details.errorCode
  const code = e?.code
  return typeof code === 'string' && azureStatusOf(err) !== undefined ? code : ''
}

function findCloudPilotError (err: unknown): CloudPilotError | undefined {
  let current: unknown = err
  for (let depth = 0; depth < 5 && current !== undefined && current !== null; depth++) {
    if (current instanceof CloudPilotError) return current
    current = (current as { cause?: unknown }).cause
  }
  return undefined
}

export function mapAzureError (err: unknown, ctx: AzureErrorContext): Error {
  if (isAbortError(err) && ctx.callerAborted) return err as Error
  const own = findCloudPilotError(err)
  if (own !== undefined) return own
  // The SSRF guard's refusal, rewrapped by the SDK as a RestError that keeps only its code and message.
  if ((err as { code?: unknown } | null)?.code === 'ENDPOINT_NOT_ALLOWED') return new CloudPilotError('ENDPOINT_NOT_ALLOWED', redact(err instanceof Error ? err.message : String(err), ctx.secrets))
  const where = ctx.blob === undefined ? `azure ${ctx.container}` : `azure ${ctx.container}/${ctx.blob}`
  const status = azureStatusOf(err)
  const code = azureCodeOf(err)
  const raw = err instanceof Error ? err.message.split('\n')[0] ?? '' : String(err)
  const detail = redact(raw, ctx.secrets)
  const make = (errorCode: ErrorCode, message: string, options: { hint?: string, retryable?: boolean } = {}): CloudPilotError =>
    new CloudPilotError(errorCode, redact(message, ctx.secrets), { cause: err, ...options })

  if (status !== undefined) {
    const named = code === '' ? `HTTP ${status}` : code
    if (CREDENTIALS.has(code) || status === 401) return make('AUTH_FAILED', `${ctx.op} ${where}: the storage account rejected the credentials (${named})`, { hint: ERRORS.AUTH_FAILED.hint })
    if (PERMISSION.has(code)) return make('AUTH_FAILED', `${ctx.op} ${where}: access denied (${named})`, { hint: AZURE_PERMISSION_HINT })
    // A HEAD refused for bad credentials has no error code at all.
    if (status === 403) return make('AUTH_FAILED', `${ctx.op} ${where}: access denied (HTTP 403)`, { hint: `${ERRORS.AUTH_FAILED.hint} ${AZURE_PERMISSION_HINT}` })
    if (CONTAINER.has(code)) return make('CONTAINER_NOT_FOUND', `${ctx.op} ${where}: container ${ctx.container} does not exist (${named})`, { hint: CONTAINER_HINT })
    if (BLOB.has(code)) return make('OBJECT_NOT_FOUND', `${ctx.op} ${where}: no such object`)
    if (status === 404 && code === 'ResourceNotFound') return make('CONTAINER_NOT_FOUND', `${ctx.op} ${where}: the account endpoint has no such resource (${named})`, { hint: 'Check the account URL (https://<account>.blob.core.windows.net) and the container name.' })
    if (SPACE.has(code)) return make('NO_SPACE', `${ctx.op} ${where}: the storage account is out of capacity (${named})`, { hint: 'Raise the account\'s capacity or shorten retention.' })
    const transient = status >= 500 || status === 429 || status === 408
    return make('UPLOAD_FAILED', `${ctx.op} ${where}: ${named}: ${detail}`, { retryable: transient })
  }
  const network = networkErrorCode(err)
  if (network === 'UNREACHABLE') return make('UNREACHABLE', `${ctx.op} ${where}: cannot reach ${ctx.endpoint}: ${detail}`, { retryable: true })
  if (network === 'TLS_ERROR') return make('TLS_ERROR', `${ctx.op} ${where}: TLS with ${ctx.endpoint} failed: ${detail}`)
  if (isAbortError(err) || /timeout|timed out/i.test(raw) || (err as { name?: unknown } | null)?.name === 'TimeoutError') {
    return make('UNREACHABLE', `${ctx.op} ${where}: ${ctx.endpoint} did not answer in time: ${detail}`, { retryable: true })
  }
  return make('UPLOAD_FAILED', `${ctx.op} ${where}: ${detail}`, { retryable: false })
}
