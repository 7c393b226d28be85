import { CloudPilotError, ERRORS, type ErrorCode } from '@cloudpilot/protocol'
import { aborted } from './abortable.ts'
import { fetchWithDeadline, readJson, readText } from './fetch-request.ts'
import type { AccessTokenSource } from './google-auth.ts'
import { mapTransportError, transientStatus } from './http-error-map.ts'
import { checkResolvedHost } from './http-endpoint.ts'
import { abortError } from './node-error-map.ts'
import { withRetries, type RetryPolicy } from './retry.ts'

/**
 * The Drive v3 REST calls of the google_drive driver (https://developers.google.com/drive/api/reference/rest/v3),
 * over fetch: bearer token, bounded retries of transient answers (5xx, 429, 403 rate limits, network) with
 * backoff, one token renewal on 401, and Drive's JSON errors mapped onto the destination table:
 * {error: {code, message, errors: [{reason, message, location}]}}.
 */

export interface DriveApiOptions {
  root: URL
  tokens: AccessTokenSource
  allowPrivate: boolean
  timeoutMs: number
  retry: RetryPolicy
  folderId: string
}

export interface DriveCall {
  method: string
  /** Path under the root ("drive/v3/files") or an absolute URL (a session URI). */
  path: string | URL
  query?: Record<string, string>
  headers?: Record<string, string>
  body?: Buffer | string
  signal?: AbortSignal | undefined
  /** Statuses that are answers, not failures (e.g. 308 for a chunk, 404 for a lookup). */
  accept?: number[]
  /** Send no Authorization header (requests to a resumable session URI: the URI is the credential). */
  anonymous?: boolean
  /** What the call is, for messages ("put backups/x.sql.gz"). */
  what: string
  /** Whether the call may be sent again after a transient failure. */
  idempotent: boolean
}

const RATE_LIMIT = new Set(['rateLimitExceeded', 'userRateLimitExceeded', 'sharingRateLimitExceeded', 'backendError'])
const PERMISSION = new Set(['insufficientFilePermissions', 'forbidden', 'insufficientPermissions', 'domainPolicy', 'appNotAuthorizedToFile', 'cannotAddParent', 'teamDriveMembershipRequired', 'insufficientParentPermissions'])
export const DRIVE_PERMISSION_HINT = 'The account may not write to this folder: share the folder with the service account\'s email (as Editor, or Content manager in a shared drive), or authorize a user who can.'
export const DRIVE_FOLDER_HINT = 'Check the folderId (the last part of the folder\'s URL, drive.google.com/drive/folders/<folderId>) and that the folder is shared with this account.'

export interface DriveErrorBody { error?: { code?: number, message?: string, errors?: Array<{ reason?: string, message?: string }> } }

export function driveReasonOf (body: unknown): string {
  return (body as DriveErrorBody | undefined)?.error?.errors?.[0]?.reason ?? ''
}

export class DriveApi {
  private readonly options: DriveApiOptions

  constructor (options: DriveApiOptions) {
    this.options = options
  }

  get origin (): string {
    return this.options.root.origin
  }

  url (path: string | URL, query: Record<string, string> = {}): URL {
    const url = typeof path === 'string' ? new URL(path, this.options.root) : new URL(path.href)
    for (const [k, v] of Object.entries(query)) url.searchParams.set(k, v)
    return url
  }

  /** One call with retries and token renewal; answers with a status in `accept` or 2xx are returned. */
  async call (call: DriveCall): Promise<Response> {
    const url = this.url(call.path, call.query)
    const { signal } = call
    let renewed = false
    return await withRetries(async () => {
      if (aborted(signal)) throw abortError(signal)
      let response: Response
      try {
        await checkResolvedHost(url, this.options.allowPrivate)
        const headers: Record<string, string> = { ...call.headers }
        if (call.anonymous !== true) headers.authorization = `Bearer ${(await this.options.tokens.token(signal)).token}`
        response = await fetchWithDeadline(url, { method: call.method, headers, body: call.body, signal, timeoutMs: this.options.timeoutMs })
      } catch (err) {
        throw mapTransportError(err, { what: call.what, endpoint: url.origin, secrets: [], signal })
      }
      if (response.ok || call.accept?.includes(response.status) === true) return response
      const text = await readText(response)
      let body: unknown
      try { body = JSON.parse(text) as unknown } catch { body = undefined }
      if (response.status === 401 && call.anonymous !== true && !renewed) {
        // The token was refused (revoked, or expired early): renew it once.
        renewed = true
        this.options.tokens.invalidate()
        throw new CloudPilotError('AUTH_FAILED', `${call.what}: access token refused`, { retryable: true })
      }
      throw this.error(response.status, body, text, call.what)
    }, {
      policy: this.options.retry,
      signal,
      retryable: (err) => err instanceof CloudPilotError && err.retryable && (call.idempotent || err.code === 'AUTH_FAILED'),
    })
  }

  /** Drive's JSON error as a CloudPilotError. */
  error (status: number, body: unknown, text: string, what: string): CloudPilotError {
    const reason = driveReasonOf(body)
    const message = this.options.tokens.redact((body as DriveErrorBody | undefined)?.error?.message ?? (text.slice(0, 200) || `HTTP ${status}`))
    const make = (code: ErrorCode, msg: string, options: { hint?: string, retryable?: boolean } = {}): CloudPilotError => new CloudPilotError(code, msg, options)
    if (status === 401) return make('AUTH_FAILED', `${what}: the access token was refused (${message})`, { hint: ERRORS.AUTH_FAILED.hint })
    if (reason === 'storageQuotaExceeded' || reason === 'teamDriveFileLimitExceeded' || reason === 'numChildrenInNonRootLimitExceeded') {
      return make('NO_SPACE', `${what}: no space left (${reason}: ${message})`, { hint: 'Service accounts have no Drive storage of their own: use a folder in a shared drive, or OAuth credentials of a user with free space. Otherwise free space or shorten retention.' })
    }
    if ((status === 403 || status === 429) && RATE_LIMIT.has(reason)) return make('UPLOAD_FAILED', `${what}: rate limited (${reason})`, { retryable: true })
    if (status === 429) return make('UPLOAD_FAILED', `${what}: rate limited (${message})`, { retryable: true })
    if (status === 403 && (PERMISSION.has(reason) || reason === '')) return make('AUTH_FAILED', `${what}: access denied (${reason === '' ? message : `${reason}: ${message}`})`, { hint: DRIVE_PERMISSION_HINT })
    if (status === 403 && (reason === 'accessNotConfigured' || reason === 'dailyLimitExceeded')) return make('AUTH_FAILED', `${what}: ${reason}: ${message}`, { hint: 'Enable the Google Drive API for the project of these credentials (console.cloud.google.com → APIs & Services).' })
    if (status === 404 && new RegExp(`File not found: ${escapeRegExp(this.options.folderId)}\\.?$`).test(message)) return make('CONTAINER_NOT_FOUND', `${what}: folder ${this.options.folderId} not found (${message})`, { hint: DRIVE_FOLDER_HINT })
    if (status === 404) return make('OBJECT_NOT_FOUND', `${what}: not found (${message})`)
    return make('UPLOAD_FAILED', `${what}: ${reason === '' ? '' : reason + ': '}${message} (HTTP ${status})`, { retryable: transientStatus(status) })
  }

  /** The JSON of a successful answer. */
  async json<T> (response: Response, what: string): Promise<T> {
    const data = await readJson(response)
    if (data === undefined || data === null || typeof data !== 'object') throw new CloudPilotError('UPLOAD_FAILED', `${what}: the API answered ${response.status} without JSON`, { retryable: true })
    return data as T
  }
}

function escapeRegExp (text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}

/** A string literal of Drive's query language: backslash and single quote escaped with a backslash. */
export function driveQueryString (value: string): string {
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`
}
