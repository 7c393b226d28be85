import { PassThrough, Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { IdempotencyStrategy, Storage, type Bucket, type File } from '@google-cloud/storage'
// google-auth-library is @google-cloud/storage's own auth dependency: its OAuth2Client is how the SDK takes an
// access token from elsewhere (refreshHandler). Tokens come from google-auth.ts (JWT RS256 → the key's token_uri).
import { OAuth2Client } from 'google-auth-library'
import { CloudPilotError, type GcsConfig, type GcsCredentials } from '@cloudpilot/protocol'
import type { CallOptions, GetOptions, ListOptions, ListPage, ObjectInfo, OpenOptions, PutOptions, PutResult, StorageDriver, TestResult } from './driver.ts'
import { aborted } from './abortable.ts'
import { checkRange, type ByteRange } from './byte-range.ts'
import { downloadStream } from './download-stream.ts'
import { fetchWithDeadline } from './fetch-request.ts'
import { gcsStatusOf, isBucketMissing, mapGcsError, type GcsOperation } from './gcs-error-map.ts'
import { AccessTokenSource, parseServiceAccountJson } from './google-auth.ts'
import { checkResolvedHost, parseServiceUrl } from './http-endpoint.ts'
import { checkKey, normalisePrefix } from './key-path.ts'
import { abortError, throwIfAborted } from './node-error-map.ts'
import { probeRoundTrip } from './probe.ts'
import { redact } from './redact.ts'
import { sourceError, uploadSource } from './upload-source.ts'

const MiB = 1024 * 1024
const DEFAULT_ENDPOINT = 'https://storage.googleapis.com'
const SCOPES = ['https://www.googleapis.com/auth/devstorage.read_write']

/** Knobs with production defaults; tests may change them. */
export interface GcsTuning {
  /** Resumable upload chunk (a multiple of 256 KiB); the SDK holds one chunk in memory per put. */
  chunkSize: number
  /** Retries of a request after the first attempt (the SDK's maxRetries): 408, 429, 5xx, resets. */
  maxRetries: number
  /** Longest wait between two attempts (the SDK starts at ~1 s and doubles). */
  maxRetryDelaySeconds: number
  /** Per-request timeout of the SDK. */
  timeoutMs: number
  /** Time allowed to cancel (or take back) the upload session of a failed or aborted put. */
  cleanupTimeoutMs: number
}

export const DEFAULT_GCS_TUNING: GcsTuning = {
  chunkSize: 8 * MiB,
  maxRetries: 2,
  maxRetryDelaySeconds: 8,
  timeoutMs: 120_000,
  cleanupTimeoutMs: 30_000,
}

/**
 * `gcs`: a Google Cloud Storage bucket (@google-cloud/storage), authenticated with a service account key.
 *
 * put streams through a resumable upload: the session is opened (authenticated POST), then chunks of `chunkSize`
 * are PUT to the session URI; GCS answers 308 until the last chunk and creates the object only when it has the
 * whole of it, so a failed or aborted put never shows a partial object. The session of an interrupted put is then
 * cancelled (DELETE on its URI); if it had been finalised meanwhile (an abort racing the last chunk), the object
 * it made is deleted again, with its generation as precondition so a newer object is never touched.
 *
 * Two notes on @google-cloud/storage 7.22: it authenticates with a token from `OAuth2Client.refreshHandler`
 * (filled by google-auth.ts, which honours the key's `token_uri`); and `createWriteStream` does not pass
 * `useAuthWithCustomEndpoint` on to its resumable upload, so with a custom `apiEndpoint` the chunks would go out
 * without a token. The session is therefore opened with `createResumableUpload` (which does pass it) and its URI
 * handed to `createWriteStream`: requests to a session URI need no token (the URI is the credential).
 */
export class GcsDriver implements StorageDriver {
  readonly type = 'gcs' as const
  readonly storage: Storage
  readonly bucket: Bucket
  readonly prefix: string
  private readonly bucketName: string
  private readonly endpoint: URL
  private readonly tokens: AccessTokenSource
  private readonly allowPrivate: boolean
  private readonly rateLimit: number | undefined
  private readonly tuning: GcsTuning
  private readonly onWarning: OpenOptions['onWarning']
  private readonly secrets: readonly string[]
  private readonly auth: OAuth2Client

  constructor (config: GcsConfig, credentials: GcsCredentials, options: OpenOptions = {}, tuning: Partial<GcsTuning> = {}) {
    const bucket = typeof config.bucket === 'string' ? config.bucket.trim() : ''
    if (!/^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$/.test(bucket)) throw new CloudPilotError('VALIDATION_FAILED', 'gcs bucket must be 3-222 lowercase letters, digits, dots, hyphens and underscores (Google\'s naming rules)')
    if (typeof credentials.serviceAccountJson !== 'string') throw new CloudPilotError('VALIDATION_FAILED', 'gcs destination needs serviceAccountJson')
    this.allowPrivate = options.allowPrivateEndpoints === true
    const key = parseServiceAccountJson(credentials.serviceAccountJson, this.allowPrivate)
    const apiEndpoint = typeof config.apiEndpoint === 'string' && config.apiEndpoint.trim() !== '' ? config.apiEndpoint.trim().replace(/\/+$/, '') : undefined
    this.endpoint = parseServiceUrl(apiEndpoint ?? DEFAULT_ENDPOINT, 'gcs apiEndpoint', this.allowPrivate)
    this.bucketName = bucket
    this.prefix = normalisePrefix(config.prefix)
    this.rateLimit = config.rateLimitBytesPerSecond
    this.tuning = { ...DEFAULT_GCS_TUNING, ...tuning }
    if (this.tuning.chunkSize % (256 * 1024) !== 0) throw new CloudPilotError('VALIDATION_FAILED', 'gcs chunk size must be a multiple of 256 KiB')
    this.onWarning = options.onWarning
    this.tokens = new AccessTokenSource({ kind: 'service_account', key, scopes: SCOPES }, { allowPrivate: this.allowPrivate, timeoutMs: 30_000, label: `gcs ${bucket}` })
    this.secrets = []

    const auth = new OAuth2Client()
    this.auth = auth
    let handedOut: string | undefined
    auth.refreshHandler = async () => {
      // OAuth2Client asks again 5 minutes before expiry, or when the API refused its token (401): a token that is
      // not that close to its end was refused, so fetch a new one.
      if (handedOut !== undefined && handedOut === this.tokens.current() && this.tokens.remainingMs() > 6 * 60_000) this.tokens.invalidate()
      const token = await this.tokens.token()
      handedOut = token.token
      return { access_token: token.token, expiry_date: token.expiresAt }
    }
    this.storage = new Storage({
      projectId: key.projectId ?? 'cloudpilot',
      authClient: auth,
      ...(apiEndpoint === undefined ? {} : { apiEndpoint: this.endpoint.href.replace(/\/$/, ''), useAuthWithCustomEndpoint: true }),
      retryOptions: {
        autoRetry: true,
        maxRetries: this.tuning.maxRetries,
        retryDelayMultiplier: 2,
        maxRetryDelay: this.tuning.maxRetryDelaySeconds,
        totalTimeout: 600,
        // Deletes are retried too: deleting an object twice is harmless here.
        idempotencyStrategy: IdempotencyStrategy.RetryAlways,
      },
      timeout: this.tuning.timeoutMs,
    })
    this.bucket = this.storage.bucket(bucket)
  }

  private objectName (key: string): string {
    return this.prefix + checkKey(key)
  }

  private fail (err: unknown, op: GcsOperation, signal: AbortSignal | undefined, object?: string): Error {
    return mapGcsError(err, { op, bucket: this.bucketName, endpoint: this.endpoint.origin, secrets: this.secrets, callerAborted: aborted(signal), ...(object === undefined ? {} : { object }) })
  }

  private warn (message: string, details: Record<string, unknown>): void {
    try { this.onWarning?.(this.tokens.redact(message), details) } catch { /* a broken logger must not fail a put */ }
  }

  /** Every call starts here: the endpoint's name through the SSRF guard, a token (so auth failures are ours). */
  private async ready (signal: AbortSignal | undefined): Promise<void> {
    await checkResolvedHost(this.endpoint, this.allowPrivate)
    await this.tokens.token(signal)
  }

  /**
   * Runs a request; when the API refuses the token (401: revoked or expired early), fetches a new one and tries
   * once more. The SDK itself only renews a token when it thinks it expired.
   */
  private async authorized<T> (signal: AbortSignal | undefined, fn: () => Promise<T>): Promise<T> {
    await this.ready(signal)
    try {
      return await fn()
    } catch (err) {
      if (gcsStatusOf(err) !== 401 || aborted(signal)) throw err
      this.tokens.invalidate()
      this.auth.setCredentials({})
      await this.ready(signal)
      return await fn()
    }
  }

  async put (key: string, body: Readable, options: PutOptions = {}): Promise<PutResult> {
    const name = this.objectName(key)
    const { signal } = options
    if (aborted(signal)) {
      body.destroy()
      throw abortError(signal)
    }
    const file = this.bucket.file(name)
    const metadata = {
      contentType: options.contentType ?? 'application/octet-stream',
      ...(options.metadata === undefined ? {} : { metadata: options.metadata }),
    }
    let uri: string
    try {
      ;[uri] = await this.authorized(signal, async () => await file.createResumableUpload({ metadata }))
      // The session URI comes from a Location header: never send anything to another origin.
      if (new URL(uri).origin !== this.endpoint.origin) throw new CloudPilotError('UPLOAD_FAILED', `put gs://${this.bucketName}/${name}: the upload session is on another origin than the endpoint (${new URL(uri).origin})`, { retryable: false })
    } catch (err) {
      body.destroy()
      if (aborted(signal)) throw abortError(signal)
      throw this.fail(err, 'put', signal, name)
    }
    const source = uploadSource(body, { rateLimitBytesPerSecond: this.rateLimit, signal })
    const sink = file.createWriteStream({ uri, resumable: true, chunkSize: this.tuning.chunkSize, validation: 'crc32c', metadata })
    try {
      await pipeline(source.stream, sink, signal === undefined ? {} : { signal })
    } catch (err) {
      if (!source.stream.destroyed) source.stream.destroy()
      if (!sink.destroyed) sink.destroy()
      await this.abandonSession(uri, name)
      if (aborted(signal)) throw abortError(signal)
      const fromSource = source.sourceFailure()
      if (fromSource !== undefined) throw sourceError(fromSource)
      throw this.fail(err, 'put', signal, name)
    }
    if (aborted(signal)) {
      // Finalised while the caller aborted: take the object back (see the class notes).
      await this.abandonSession(uri, name)
      throw abortError(signal)
    }
    return { key, sizeBytes: source.bytes() }
  }

  /**
   * After a failed or aborted put: asks the session for its status (a PUT with `Content-Range: bytes *\/*`);
   * an unfinished session is cancelled (DELETE → 499), a finished one had created the object, which is deleted
   * if it is still that generation.
   */
  private async abandonSession (uri: string, name: string): Promise<void> {
    const deadline = AbortSignal.timeout(this.tuning.cleanupTimeoutMs)
    try {
      const status = await fetchWithDeadline(uri, { method: 'PUT', headers: { 'content-range': 'bytes */*', 'content-length': '0' }, signal: deadline, timeoutMs: this.tuning.cleanupTimeoutMs })
      if (status.status === 200 || status.status === 201) {
        const object = await status.json() as { generation?: string }
        await this.bucket.file(name).delete({ ifGenerationMatch: Number(object.generation) })
        return
      }
      await status.body?.cancel()
      if (status.status !== 308) return // 404/410/499: the session is gone already
      const cancel = await fetchWithDeadline(uri, { method: 'DELETE', signal: deadline, timeoutMs: this.tuning.cleanupTimeoutMs })
      await cancel.body?.cancel()
      if (cancel.status !== 499 && cancel.status !== 404 && cancel.status !== 410 && !cancel.ok) throw new Error(`cancelling the upload session answered HTTP ${cancel.status}`)
    } catch (err) {
      if (gcsStatusOf(err) === 412 || gcsStatusOf(err) === 404) return // replaced or deleted meanwhile
      this.warn('could not cancel the upload session of a failed gcs put; Google removes unfinished sessions after a week', { bucket: this.bucketName, object: name, error: redact(err instanceof Error ? err.message : String(err), this.secrets) })
    }
  }

  async get (key: string, options: GetOptions = {}): Promise<Readable> {
    const name = this.objectName(key)
    const range = options.range === undefined ? undefined : checkRange(options.range)
    const { signal } = options
    throwIfAborted(signal)
    let opened: { source: Readable, buffer: PassThrough }
    try {
      opened = await this.authorized(signal, async () => await this.openRead(name, range, signal))
    } catch (err) {
      if (aborted(signal)) throw abortError(signal)
      if (range !== undefined && gcsStatusOf(err) === 416) return Readable.from([])
      throw this.fail(err, 'get', signal, name)
    }
    const { source, buffer } = opened
    source.on('error', (err) => { buffer.destroy(err) })
    buffer.on('close', () => { if (!source.destroyed) source.destroy() })
    return downloadStream(buffer, (err) => this.fail(err, 'get', signal, name), signal)
  }

  /** Starts a download and waits for the answer's headers; rejects with the SDK's error for an error answer. */
  private async openRead (name: string, range: ByteRange | undefined, signal: AbortSignal | undefined): Promise<{ source: Readable, buffer: PassThrough }> {
    const source = this.bucket.file(name).createReadStream({
      ...(range === undefined ? { validation: 'crc32c' as const } : { validation: false, start: range.start, ...(range.end === undefined ? {} : { end: range.end }) }),
    })
    // The request starts when the stream is read: start it, and wait for the answer's headers (or its failure).
    const buffer = new PassThrough({ highWaterMark: 256 * 1024 })
    source.pipe(buffer)
    const answered = await new Promise<unknown>((resolve) => {
      const done = (result: unknown): void => {
        source.off('response', onResponse)
        source.off('error', onError)
        signal?.removeEventListener('abort', onAbort)
        resolve(result)
      }
      // An error answer is followed by an 'error' with the parsed ApiError: wait for that one.
      const onResponse = (res: { statusCode?: number }): void => { if ((res.statusCode ?? 200) < 400) done(undefined) }
      const onError = (err: unknown): void => { done(err) }
      const onAbort = (): void => { done(abortError(signal)) }
      source.on('response', onResponse)
      source.once('error', onError)
      signal?.addEventListener('abort', onAbort, { once: true })
    })
    if (answered !== undefined) {
      source.destroy()
      buffer.destroy()
      throw answered
    }
    return { source, buffer }
  }

  async stat (key: string, options: CallOptions = {}): Promise<ObjectInfo | null> {
    const name = this.objectName(key)
    const { signal } = options
    throwIfAborted(signal)
    try {
      const [metadata] = await this.authorized(signal, async () => await this.bucket.file(name).getMetadata())
      throwIfAborted(signal)
      return { key, sizeBytes: Number(metadata.size ?? 0), modifiedAt: new Date(metadata.updated ?? metadata.timeCreated ?? 0) }
    } catch (err) {
      if (aborted(signal)) throw abortError(signal)
      if (gcsStatusOf(err) === 404 && !isBucketMissing(err)) return null
      throw this.fail(err, 'stat', signal, name)
    }
  }

  async delete (key: string, options: CallOptions = {}): Promise<void> {
    const name = this.objectName(key)
    const { signal } = options
    throwIfAborted(signal)
    try {
      await this.authorized(signal, async () => {
        throwIfAborted(signal)
        await this.bucket.file(name).delete()
      })
    } catch (err) {
      if (aborted(signal)) throw abortError(signal)
      // A missing object is fine; a missing bucket is not (retention must not count it as deleted).
      if (gcsStatusOf(err) === 404 && !isBucketMissing(err)) return
      throw this.fail(err, 'delete', signal, name)
    }
  }

  async list (prefix: string, options: ListOptions = {}): Promise<ListPage> {
    const { signal } = options
    throwIfAborted(signal)
    if (typeof prefix !== 'string' || prefix.includes('\0')) throw new CloudPilotError('VALIDATION_FAILED', 'list prefix contains a NUL character')
    const limit = Math.min(Math.max(Math.trunc(options.limit ?? 1000), 1), 1000)
    try {
      const [files, next] = await this.authorized(signal, async () => await this.bucket.getFiles({
        prefix: this.prefix + prefix,
        maxResults: limit,
        autoPaginate: false,
        ...(options.cursor === undefined || options.cursor === null || options.cursor === '' ? {} : { pageToken: options.cursor }),
      }))
      throwIfAborted(signal)
      const items: ObjectInfo[] = []
      for (const file of files as File[]) {
        if (!file.name.startsWith(this.prefix)) continue
        const k = file.name.slice(this.prefix.length)
        if (k === '' || k.endsWith('/')) continue
        items.push({ key: k, sizeBytes: Number(file.metadata.size ?? 0), modifiedAt: new Date(file.metadata.updated ?? file.metadata.timeCreated ?? 0) })
      }
      const token = (next as { pageToken?: unknown } | null | undefined)?.pageToken
      return { items, nextCursor: typeof token === 'string' && token !== '' ? token : null }
    } catch (err) {
      if (aborted(signal)) throw abortError(signal)
      throw this.fail(err, 'list', signal)
    }
  }

  async test (options: CallOptions = {}): Promise<TestResult> {
    return await probeRoundTrip(this, options)
  }

  async close (): Promise<void> {}
}
