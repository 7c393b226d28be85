import { randomBytes } from 'node:crypto'
import { Readable } from 'node:stream'
import type { ReadableStream as WebReadableStream } from 'node:stream/web'
import { CloudPilotError, type CloudinaryConfig, type CloudinaryCredentials } from '@cloudpilot/protocol'
import type { CallOptions, GetOptions, ListOptions, ListPage, ObjectInfo, OpenOptions, PutOptions, PutResult, StorageDriver, TestResult } from './driver.ts'
import { aborted } from './abortable.ts'
import { checkRange, parseContentRange, rangeHeader, sliceStream, type ByteRange } from './byte-range.ts'
import { CloudinaryApi } from './cloudinary-api.ts'
import { deliverySignature, escapePublicId, keyOf, publicIdOf } from './cloudinary-signature.ts'
import { downloadStream } from './download-stream.ts'
import { mapTransportError } from './http-error-map.ts'
import { parseServiceUrl } from './http-endpoint.ts'
import { checkKey, normalisePrefix } from './key-path.ts'
import { abortError, throwIfAborted } from './node-error-map.ts'
import { probeRoundTrip } from './probe.ts'
import { DEFAULT_RETRY, type RetryPolicy } from './retry.ts'
import { redact } from './redact.ts'
import { chunks, sourceError, uploadSource } from './upload-source.ts'

const MiB = 1024 * 1024
const DEFAULT_API = 'https://api.cloudinary.com'
const DEFAULT_DELIVERY = 'https://res.cloudinary.com'
/** Cloudinary's smallest chunk (all but the last). */
const MIN_CHUNK = 5 * 1000 * 1000
const MAX_PUBLIC_ID = 255

/** Knobs with production defaults; tests may change them. */
export interface CloudinaryTuning {
  /** Chunk size of a put (>= 5 MB); about two chunks are held in memory per put. */
  chunkSize: number
  /** Time allowed until an answer's headers (sending a chunk included). */
  timeoutMs: number
  retry: RetryPolicy
}

export const DEFAULT_CLOUDINARY_TUNING: CloudinaryTuning = {
  chunkSize: 8 * MiB,
  timeoutMs: 120_000,
  retry: DEFAULT_RETRY,
}

interface Resource { public_id: string, version?: number, bytes?: number, created_at?: string }

/**
 * `cloudinary`: raw files in a Cloudinary product environment, over the documented REST APIs with fetch (no SDK).
 *
 * - Objects are `raw` assets of delivery type `authenticated`: not readable by URL without a signature (a
 *   backup must never be public). The public ID is the configured folder plus the key, with the characters
 *   Cloudinary refuses escaped (see cloudinary-signature.ts); the key comes back from it unchanged.
 * - put is a chunked upload (POST /v1_1/<cloud>/raw/upload with `X-Unique-Upload-Id` and
 *   `Content-Range: bytes a-b/<-1 until the last chunk, then the total>`, each chunk a complete signed request):
 *   Cloudinary creates (or replaces) the asset only when the last chunk arrives, so a failed or aborted put leaves
 *   nothing; the chunks of an interrupted upload are discarded by Cloudinary (no call exists to cancel one). The
 *   last chunk is not interrupted by an abort; the asset it made is destroyed again if the caller aborted.
 * - get reads the version from the Admin API (GET resources/raw/authenticated/<id>) and downloads through a
 *   signed delivery URL with that version (a replaced asset is never served from a stale CDN copy), with Range.
 * - list pages through the Admin API (prefix, next_cursor), which lists by creation time: every page is fetched,
 *   sorted by key, and served with the last key as cursor. Admin API calls are rate-limited per hour by plan.
 * - delete is the signed destroy (with CDN invalidation), which answers "not found" for a missing asset.
 * - Cloudinary does not store empty files: a put of nothing fails UPLOAD_FAILED (never retryable). Plans cap the
 *   size of raw files; a larger put fails with the plan's limit in the message.
 */
export class CloudinaryDriver implements StorageDriver {
  readonly type = 'cloudinary' as const
  private readonly api: CloudinaryApi
  private readonly cloudName: string
  private readonly folder: string
  private readonly delivery: URL
  private readonly apiSecret: string
  private readonly rateLimit: number | undefined
  private readonly tuning: CloudinaryTuning
  private readonly onWarning: OpenOptions['onWarning']

  constructor (config: CloudinaryConfig, credentials: CloudinaryCredentials, options: OpenOptions = {}, tuning: Partial<CloudinaryTuning> = {}) {
    const cloudName = typeof config.cloudName === 'string' ? config.cloudName.trim() : ''
    if (!/^[A-Za-z0-9_-]{1,128}$/.test(cloudName)) throw new CloudPilotError('VALIDATION_FAILED', 'cloudinary cloudName must be the product environment\'s cloud name (letters, digits, - and _)')
    const apiKey = typeof credentials.apiKey === 'string' ? credentials.apiKey.trim() : ''
    const apiSecret = typeof credentials.apiSecret === 'string' ? credentials.apiSecret.trim() : ''
    if (apiKey === '' || apiSecret === '') throw new CloudPilotError('VALIDATION_FAILED', 'cloudinary destination needs apiKey and apiSecret')
    const allowPrivate = options.allowPrivateEndpoints === true
    const api = parseServiceUrl(typeof config.apiUrl === 'string' && config.apiUrl.trim() !== '' ? config.apiUrl.trim() : DEFAULT_API, 'cloudinary apiUrl', allowPrivate)
    this.delivery = parseServiceUrl(typeof config.deliveryUrl === 'string' && config.deliveryUrl.trim() !== '' ? config.deliveryUrl.trim() : DEFAULT_DELIVERY, 'cloudinary deliveryUrl', allowPrivate)
    this.tuning = { ...DEFAULT_CLOUDINARY_TUNING, ...tuning }
    if (this.tuning.chunkSize < MIN_CHUNK) throw new CloudPilotError('VALIDATION_FAILED', 'cloudinary chunk size must be at least 5 MB')
    this.cloudName = cloudName
    this.folder = publicIdOf(normalisePrefix(config.folder))
    this.apiSecret = apiSecret
    this.rateLimit = config.rateLimitBytesPerSecond
    this.onWarning = options.onWarning
    this.api = new CloudinaryApi({ cloudName, apiKey, apiSecret, api, allowPrivate, timeoutMs: this.tuning.timeoutMs, retry: this.tuning.retry })
  }

  private publicId (key: string): string {
    const id = this.folder + publicIdOf(checkKey(key))
    if (id.length > MAX_PUBLIC_ID) throw new CloudPilotError('VALIDATION_FAILED', `cloudinary public IDs are at most ${MAX_PUBLIC_ID} characters; this key (with the folder) makes ${id.length}`)
    return id
  }

  private what (op: string, key?: string): string {
    return key === undefined ? `${op} cloudinary ${this.cloudName}` : `${op} cloudinary ${this.cloudName}/${this.folder}${key}`
  }

  private warn (message: string, details: Record<string, unknown>): void {
    try { this.onWarning?.(redact(message, this.api.secrets), details) } catch { /* a broken logger must not fail a put */ }
  }

  /** The asset's details from the Admin API, or undefined when there is none. */
  private async resource (publicId: string, signal: AbortSignal | undefined, what: string): Promise<Resource | undefined> {
    const url = this.api.url(`resources/raw/authenticated/${publicId.split('/').map(encodeURIComponent).join('/')}`)
    const response = await this.api.call({ method: 'GET', url, basicAuth: true, signal, accept: [404], what })
    const text = await response.text()
    if (response.status === 404) {
      // A missing asset, or a missing cloud (then the message names the cloud name).
      const err = this.api.error(404, text, response.headers.get('x-cld-error'), what)
      if (err.code !== 'OBJECT_NOT_FOUND') throw err
      return undefined
    }
    return JSON.parse(text) as Resource
  }

  private async destroy (publicId: string, signal: AbortSignal | undefined, what: string): Promise<void> {
    const response = await this.api.call({ method: 'POST', url: this.api.url('raw/destroy'), signed: { public_id: publicId, type: 'authenticated', invalidate: 'true' }, signal, what })
    const result = await response.json() as { result?: string }
    if (result.result !== 'ok' && result.result !== 'not found') throw new CloudPilotError('UPLOAD_FAILED', `${what}: destroy answered ${JSON.stringify(result.result ?? null)}`, { retryable: true })
  }

  async put (key: string, body: Readable, options: PutOptions = {}): Promise<PutResult> {
    const publicId = this.publicId(key)
    const { signal } = options
    if (aborted(signal)) {
      body.destroy()
      throw abortError(signal)
    }
    const what = this.what('put', key)
    const uploadId = randomBytes(16).toString('hex')
    const url = this.api.url('raw/upload')
    const source = uploadSource(body, { rateLimitBytesPerSecond: this.rateLimit, signal })
    let result: Resource | undefined
    try {
      for await (const chunk of chunks(source.stream, this.tuning.chunkSize)) {
        if (chunk.data.length === 0) throw new CloudPilotError('UPLOAD_FAILED', `${what}: Cloudinary does not store empty files`, { retryable: false })
        const end = chunk.offset + chunk.data.length
        const response = await this.api.call({
          method: 'POST',
          url,
          signed: { public_id: publicId, type: 'authenticated', overwrite: 'true' },
          file: chunk.data,
          headers: { 'x-unique-upload-id': uploadId, 'content-range': `bytes ${chunk.offset}-${end - 1}/${chunk.last ? end : -1}` },
          // The last chunk publishes the asset: it is not interrupted (see the class notes).
          signal: chunk.last ? undefined : signal,
          what,
        })
        const answer = await response.json() as Resource & { error?: { message?: string } }
        if (answer.error !== undefined) throw this.api.error(400, JSON.stringify(answer), null, what)
        if (chunk.last) result = answer
      }
    } catch (err) {
      if (!source.stream.destroyed) source.stream.destroy()
      await source.settled
      if (aborted(signal)) throw abortError(signal)
      const fromSource = source.sourceFailure()
      if (fromSource !== undefined) throw sourceError(fromSource)
      throw err
    }
    if (result === undefined) throw new CloudPilotError('UPLOAD_FAILED', `${what}: the upload ended without the asset`, { retryable: true })
    if (aborted(signal)) {
      await this.destroy(publicId, AbortSignal.timeout(this.tuning.timeoutMs), what).catch((err: unknown) => {
        this.warn('could not destroy an asset published by an aborted put', { cloud: this.cloudName, publicId, error: redact(err instanceof Error ? err.message : String(err), this.api.secrets) })
      })
      throw abortError(signal)
    }
    return { key, sizeBytes: source.bytes() }
  }

  async get (key: string, options: GetOptions = {}): Promise<Readable> {
    const publicId = this.publicId(key)
    const range = options.range === undefined ? undefined : checkRange(options.range)
    const { signal } = options
    throwIfAborted(signal)
    const what = this.what('get', key)
    const resource = await this.resource(publicId, signal, what)
    if (resource === undefined) throw new CloudPilotError('OBJECT_NOT_FOUND', `${what}: no such object`)
    const size = resource.bytes ?? 0
    if (range !== undefined && range.start >= size) return Readable.from([])
    const base = this.delivery.href.endsWith('/') ? this.delivery.href : `${this.delivery.href}/`
    const url = new URL(`${encodeURIComponent(this.cloudName)}/raw/authenticated/${deliverySignature(publicId, this.apiSecret)}/v${resource.version ?? 1}/${escapePublicId(publicId)}`, base)
    const response = await this.api.call({ method: 'GET', url, headers: range === undefined ? {} : { range: rangeHeader(range) }, signal, what })
    if (response.body === null) return Readable.from([])
    const stream = Readable.fromWeb(response.body as WebReadableStream<Uint8Array>)
    const exact = range === undefined ? stream : exactRange(stream, range, response, size)
    return downloadStream(exact, (err) => mapTransportError(err, { what, endpoint: url.origin, secrets: this.api.secrets, signal }), signal)
  }

  async stat (key: string, options: CallOptions = {}): Promise<ObjectInfo | null> {
    const publicId = this.publicId(key)
    const { signal } = options
    throwIfAborted(signal)
    const resource = await this.resource(publicId, signal, this.what('stat', key))
    if (resource === undefined) return null
    return { key, sizeBytes: resource.bytes ?? 0, modifiedAt: new Date(resource.created_at ?? 0) }
  }

  async delete (key: string, options: CallOptions = {}): Promise<void> {
    const publicId = this.publicId(key)
    const { signal } = options
    throwIfAborted(signal)
    await this.destroy(publicId, signal, this.what('delete', key))
  }

  async list (prefix: string, options: ListOptions = {}): Promise<ListPage> {
    const { signal } = options
    throwIfAborted(signal)
    if (typeof prefix !== 'string' || prefix.includes('\0')) throw new CloudPilotError('VALIDATION_FAILED', 'list prefix contains a NUL character')
    const limit = Math.min(Math.max(Math.trunc(options.limit ?? 1000), 1), 10_000)
    const after = options.cursor ?? ''
    const what = this.what('list')
    const found = new Map<string, ObjectInfo>()
    let cursor: string | undefined
    for (let page = 0; page < 10_000; page++) {
      const url = this.api.url('resources/raw/authenticated', { prefix: this.folder + publicIdOf(prefix), max_results: '500', ...(cursor === undefined ? {} : { next_cursor: cursor }) })
      const response = await this.api.call({ method: 'GET', url, basicAuth: true, signal, what })
      const data = await response.json() as { resources?: Resource[], next_cursor?: string }
      for (const r of data.resources ?? []) {
        if (!r.public_id.startsWith(this.folder)) continue
        const k = keyOf(r.public_id.slice(this.folder.length))
        if (k.startsWith(prefix) && k > after) found.set(k, { key: k, sizeBytes: r.bytes ?? 0, modifiedAt: new Date(r.created_at ?? 0) })
      }
      cursor = data.next_cursor
      if (cursor === undefined || cursor === '') break
    }
    const keys = [...found.keys()].sort((a, b) => a < b ? -1 : a > b ? 1 : 0)
    const items = keys.slice(0, limit).map((k) => found.get(k) as ObjectInfo)
    return { items, nextCursor: keys.length > limit ? (items.at(-1)?.key ?? null) : null }
  }

  async test (options: CallOptions = {}): Promise<TestResult> {
    return await probeRoundTrip(this, options)
  }

  async close (): Promise<void> {}
}

/** The requested range exactly, whatever the CDN answered (a 200 with the whole file, or a 206). */
function exactRange (body: Readable, range: ByteRange, response: Response, size: number): Readable {
  const answered = parseContentRange(response.headers.get('content-range') ?? undefined) ?? { start: 0, end: size - 1, total: size }
  const wantedEnd = Math.min(range.end ?? Number.MAX_SAFE_INTEGER, (answered.total ?? size) - 1)
  if (answered.start === range.start && answered.end === wantedEnd) return body
  if (answered.start > range.start || answered.end < wantedEnd) {
    body.destroy()
    throw new CloudPilotError('UPLOAD_FAILED', `asked for ${rangeHeader(range)}, the CDN answered bytes ${answered.start}-${answered.end}`, { retryable: true })
  }
  return sliceStream(body, range.start - answered.start, wantedEnd - range.start + 1)
}
