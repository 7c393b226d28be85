import { randomBytes } from 'node:crypto'
import { CloudPilotError, ERRORS, type ErrorCode } from '@cloudpilot/protocol'
import { aborted } from './abortable.ts'
import { apiSignature } from './cloudinary-signature.ts'
import { fetchWithDeadline, readText } from './fetch-request.ts'
import { mapTransportError, transientStatus } from './http-error-map.ts'
import { checkResolvedHost } from './http-endpoint.ts'
import { abortError } from './node-error-map.ts'
import { redact } from './redact.ts'
import { withRetries, type RetryPolicy } from './retry.ts'

/**
 * The Cloudinary REST calls of the cloudinary driver, over fetch: Upload API calls signed per request
 * (multipart/form-data), Admin API calls with HTTP Basic auth (api_key:api_secret), delivery URLs as they are.
 * Bounded retries of transient answers (5xx, 420/429 rate limits, network) with backoff; Cloudinary's errors
 * ({error: {message}}, and the X-Cld-Error header on delivery) mapped onto the destination table.
 */

export interface CloudinaryApiOptions {
  cloudName: string
  apiKey: string
  apiSecret: string
  api: URL
  allowPrivate: boolean
  timeoutMs: number
  retry: RetryPolicy
}

export interface CloudinaryCall {
  method: 'GET' | 'POST'
  url: URL
  /** Signed Upload API parameters (multipart form fields); a `file` part is added when given. */
  signed?: Record<string, string>
  file?: Buffer
  /** Admin API: HTTP Basic with api_key:api_secret. */
  basicAuth?: boolean
  headers?: Record<string, string>
  signal?: AbortSignal | undefined
  accept?: number[]
  what: string
}

export const CLOUDINARY_AUTH_HINT = 'Re-enter the API key and API secret of this product environment (Console → Settings → API Keys) and check for trailing spaces.'
const CLOUD_HINT = 'Check the cloud name (Console → Dashboard → Product Environment); it is case-sensitive.'

export class CloudinaryApi {
  private readonly options: CloudinaryApiOptions
  readonly secrets: readonly string[]

  constructor (options: CloudinaryApiOptions) {
    this.options = options
    this.secrets = [options.apiSecret, Buffer.from(`${options.apiKey}:${options.apiSecret}`).toString('base64')]
  }

  url (path: string, query: Record<string, string> = {}): URL {
    const url = new URL(`v1_1/${encodeURIComponent(this.options.cloudName)}/${path}`, this.options.api.href.endsWith('/') ? this.options.api : new URL(`${this.options.api.href}/`))
    for (const [k, v] of Object.entries(query)) url.searchParams.set(k, v)
    return url
  }

  /** A multipart/form-data body with the signed parameters (timestamp, api_key, signature added) and the file. */
  private form (params: Record<string, string>, file: Buffer | undefined): { body: Buffer, contentType: string } {
    const fields: Record<string, string> = { ...params, timestamp: String(Math.floor(Date.now() / 1000)) }
    fields.signature = apiSignature(fields, this.options.apiSecret)
    fields.api_key = this.options.apiKey
    const boundary = `----cloudpilot${randomBytes(12).toString('hex')}`
    const parts: Buffer[] = []
    for (const [name, value] of Object.entries(fields)) {
      parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`, 'utf8'))
    }
    if (file !== undefined) {
      parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="blob"\r\nContent-Type: application/octet-stream\r\n\r\n`, 'utf8'), file, Buffer.from('\r\n'))
    }
    parts.push(Buffer.from(`--${boundary}--\r\n`))
    return { body: Buffer.concat(parts), contentType: `multipart/form-data; boundary=${boundary}` }
  }

  /** One call with bounded retries of transient failures; an answer with a status in `accept` or 2xx is returned. */
  async call (call: CloudinaryCall): Promise<Response> {
    const { signal } = call
    return await withRetries(async () => {
      if (aborted(signal)) throw abortError(signal)
      let response: Response
      try {
        await checkResolvedHost(call.url, this.options.allowPrivate)
        const headers: Record<string, string> = { ...call.headers }
        let body: Buffer | undefined
        if (call.signed !== undefined) {
          // Signed again for each attempt: a signature carries its timestamp.
          const form = this.form(call.signed, call.file)
          body = form.body
          headers['content-type'] = form.contentType
        }
        if (call.basicAuth === true) headers.authorization = `Basic ${Buffer.from(`${this.options.apiKey}:${this.options.apiSecret}`).toString('base64')}`
        response = await fetchWithDeadline(call.url, { method: call.method, headers, body, signal, timeoutMs: this.options.timeoutMs })
      } catch (err) {
        throw mapTransportError(err, { what: call.what, endpoint: call.url.origin, secrets: this.secrets, signal })
      }
      if (response.ok || call.accept?.includes(response.status) === true) return response
      const text = await readText(response)
      throw this.error(response.status, text, response.headers.get('x-cld-error'), call.what)
    }, { policy: this.options.retry, signal })
  }

  error (status: number, text: string, cldError: string | null, what: string): CloudPilotError {
    let message = cldError ?? ''
    try {
      const data = JSON.parse(text) as { error?: { message?: unknown } }
      if (typeof data.error?.message === 'string') message = data.error.message
    } catch { /* not JSON */ }
    const detail = redact(message === '' ? `HTTP ${status}` : message, this.secrets).slice(0, 300)
    const make = (code: ErrorCode, msg: string, options: { hint?: string, retryable?: boolean } = {}): CloudPilotError => new CloudPilotError(code, msg, options)
    if (/cloud[_ ]name/i.test(message) && (status === 401 || status === 404 || status === 400)) return make('CONTAINER_NOT_FOUND', `${what}: the cloud ${this.options.cloudName} is not known (${detail})`, { hint: CLOUD_HINT })
    if (status === 401) return make('AUTH_FAILED', `${what}: the credentials were refused (${detail})`, { hint: CLOUDINARY_AUTH_HINT })
    if (status === 403) return make('AUTH_FAILED', `${what}: not allowed (${detail})`, { hint: `${ERRORS.AUTH_FAILED.hint} The API key needs the upload, read and destroy permissions (and the Admin API).` })
    if (status === 404) return make('OBJECT_NOT_FOUND', `${what}: not found (${detail})`)
    if (status === 420 || status === 429) return make('UPLOAD_FAILED', `${what}: rate limited (${detail})`, { retryable: true, hint: 'Cloudinary limits Admin API calls per hour: wait, or raise the plan\'s limit.' })
    if (/file size too large|maximum is/i.test(message)) return make('UPLOAD_FAILED', `${what}: the file is larger than the Cloudinary plan allows (${detail})`, { retryable: false, hint: 'Raise the plan\'s maximum raw file size, or back up to another destination type: Cloudinary plans cap raw files at a few MB to a few GB.' })
    return make('UPLOAD_FAILED', `${what}: ${detail} (HTTP ${status})`, { retryable: transientStatus(status) })
  }
}
