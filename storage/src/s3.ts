import { randomBytes } from 'node:crypto'
import { isIP } from 'node:net'
import { Readable, Transform, addAbortSignal } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import {
  AbortMultipartUploadCommand, DeleteObjectCommand, GetObjectCommand, HeadBucketCommand, HeadObjectCommand,
  ListObjectsV2Command, PutObjectCommand, S3Client, UploadPartCommand,
} from '@aws-sdk/client-s3'
import { Upload } from '@aws-sdk/lib-storage'
import { CloudPilotError, type S3Config, type S3Credentials } from '@cloudpilot/protocol'
import type { CallOptions, GetOptions, ListOptions, ListPage, ObjectInfo, OpenOptions, PutOptions, PutResult, StorageDriver, TestResult } from './driver.ts'
import { checkRange, parseContentRange, rangeHeader, sliceStream, type ByteRange } from './byte-range.ts'
import { checkEndpointHost, guardedAgents } from './endpoint-guard.ts'
import { checkKey, normalisePrefix } from './key-path.ts'
import { abortError, isAbortError, throwIfAborted } from './node-error-map.ts'
import { mapS3Error, redact, s3NameOf, s3StatusOf, type S3Operation } from './s3-error-map.ts'
import { throttle } from './throttle.ts'

const MiB = 1024 * 1024

/** Knobs with production defaults; tests and the benchmark may change them. */
export interface S3Tuning {
  /** Multipart part size (S3: >= 5 MiB). Memory per put is about (queueSize + 2) x partSize. */
  partSize: number
  /** Parts uploaded concurrently per put. */
  queueSize: number
  /** Time to establish a TCP (and TLS) connection before the attempt fails. */
  connectionTimeoutMs: number
  /** A socket with no traffic for this long fails the request (a hung server, a dead NAT mapping). */
  socketTimeoutMs: number
  /** Attempts per request for transient errors (5xx, throttling, resets, timeouts); never for 4xx. */
  maxAttempts: number
  /** Time allowed to AbortMultipartUpload after a failed or aborted put. */
  abortUploadTimeoutMs: number
}

export const DEFAULT_S3_TUNING: S3Tuning = {
  partSize: 8 * MiB,
  queueSize: 2,
  connectionTimeoutMs: 10_000,
  socketTimeoutMs: 60_000,
  maxAttempts: 3,
  abortUploadTimeoutMs: 30_000,
}

/** S3 allows 10,000 parts; keep headroom so a sizeHint that is a little low still fits. */
const PLANNED_PARTS = 9_000
const MAX_PART_SIZE = 5 * 1024 * MiB

/**
 * `s3`: Amazon S3 and S3-compatibles (DigitalOcean Spaces, MinIO, R2, Wasabi via `endpoint`).
 *
 * put streams through `@aws-sdk/lib-storage` (multipart above one part, bounded memory). S3 publishes an object
 * only on CompleteMultipartUpload / PutObject, so a failed or aborted put never leaves a partial object under its
 * key; its multipart upload is aborted (failure to abort is reported to `onWarning`, never masks the put's own
 * error). See the notes on `put` for why the Upload's own `abort()` is not used.
 */
export class S3Driver implements StorageDriver {
  readonly type = 's3' as const
  /** The SDK client (exposed for tests, which add middleware to observe commands, and for presigning). */
  readonly client: S3Client
  readonly bucket: string
  readonly prefix: string
  private readonly host: string
  private readonly secrets: readonly string[]
  private readonly rateLimit: number | undefined
  private readonly tuning: S3Tuning
  private readonly onWarning: OpenOptions['onWarning']

  constructor (config: S3Config, credentials: S3Credentials, options: OpenOptions = {}, tuning: Partial<S3Tuning> = {}) {
    if (typeof config.bucket !== 'string' || config.bucket.trim() === '') throw new CloudPilotError('VALIDATION_FAILED', 's3 destination needs a bucket')
    if (typeof config.region !== 'string' || config.region.trim() === '') throw new CloudPilotError('VALIDATION_FAILED', 's3 destination needs a region (any value, e.g. "auto" or "us-east-1", for most S3-compatibles)')
    // Secrets never contain whitespace; a pasted trailing space or newline is the most common cause of AUTH_FAILED.
    const accessKeyId = typeof credentials.accessKeyId === 'string' ? credentials.accessKeyId.trim() : ''
    const secretAccessKey = typeof credentials.secretAccessKey === 'string' ? credentials.secretAccessKey.trim() : ''
    const sessionToken = typeof credentials.sessionToken === 'string' && credentials.sessionToken.trim() !== '' ? credentials.sessionToken.trim() : undefined
    // Without explicit credentials the SDK would fall back to its default chain (environment, ~/.aws, instance
    // metadata): never let a destination silently use the host's own identity.
    if (accessKeyId === '' || secretAccessKey === '') throw new CloudPilotError('VALIDATION_FAILED', 's3 destination needs accessKeyId and secretAccessKey')

    this.bucket = config.bucket.trim()
    this.prefix = normalisePrefix(config.prefix)
    this.secrets = sessionToken === undefined ? [secretAccessKey] : [secretAccessKey, sessionToken]
    this.rateLimit = config.rateLimitBytesPerSecond
    this.tuning = { ...DEFAULT_S3_TUNING, ...tuning }
    if (this.tuning.partSize < 5 * MiB) throw new CloudPilotError('VALIDATION_FAILED', 's3 part size must be at least 5 MiB')
    this.onWarning = options.onWarning

    const allowPrivate = options.allowPrivateEndpoints === true
    const endpoint = config.endpoint === undefined || config.endpoint.trim() === '' ? undefined : parseEndpoint(config.endpoint.trim())
    if (endpoint !== undefined) checkEndpointHost(endpoint.hostname, allowPrivate)
    this.host = endpoint?.host ?? `s3.${config.region}.amazonaws.com`
    const bareHost = endpoint?.hostname.replace(/^\[|\]$/g, '')
    const forcePathStyle = config.forcePathStyle ?? (bareHost !== undefined && (isIP(bareHost) !== 0 || bareHost === 'localhost'))
    const { httpAgent, httpsAgent } = guardedAgents(allowPrivate)

    this.client = new S3Client({
      region: config.region.trim(),
      credentials: sessionToken === undefined ? { accessKeyId, secretAccessKey } : { accessKeyId, secretAccessKey, sessionToken },
      ...(endpoint === undefined ? {} : { endpoint: endpoint.href.replace(/\/$/, '') }),
      forcePathStyle,
      // Only the configuration given here counts: no AWS_ENDPOINT_URL* or ~/.aws/config endpoint overrides.
      ignoreConfiguredEndpointUrls: true,
      // AWS: follow a bucket that lives in another region. Custom endpoints have no such redirects.
      followRegionRedirects: endpoint === undefined,
      // Since 3.729 the SDK sends CRC32 checksum headers by default; several S3-compatibles (R2, older MinIO,
      // B2, Ceph) reject them. Keep the default integrity checks for AWS itself.
      requestChecksumCalculation: endpoint === undefined ? 'WHEN_SUPPORTED' : 'WHEN_REQUIRED',
      responseChecksumValidation: endpoint === undefined ? 'WHEN_SUPPORTED' : 'WHEN_REQUIRED',
      maxAttempts: this.tuning.maxAttempts,
      retryMode: 'standard',
      requestHandler: {
        connectionTimeout: this.tuning.connectionTimeoutMs,
        socketTimeout: this.tuning.socketTimeoutMs,
        httpAgent,
        httpsAgent,
      },
    })
  }

  private objectKey (key: string): string {
    return this.prefix + checkKey(key)
  }

  private fail (err: unknown, op: S3Operation, objectKey?: string): Error {
    return mapS3Error(err, objectKey === undefined
      ? { op, bucket: this.bucket, host: this.host, secrets: this.secrets }
      : { op, bucket: this.bucket, objectKey, host: this.host, secrets: this.secrets })
  }

  private warn (message: string, details: Record<string, unknown>): void {
    try { this.onWarning?.(redact(message, this.secrets), details) } catch { /* a broken logger must not fail a put */ }
  }

  /**
   * Streams `body` to `key`. Notes on @aws-sdk/lib-storage 3.1169 (read from its source) that shape this code:
   *
   * - `Upload.abort()` only makes `done()` reject at once; in-flight UploadPart requests carry no abort signal and
   *   run on, and the AbortMultipartUpload happens later in the background with its error lost. A PutObject or
   *   CompleteMultipartUpload in flight at that moment still publishes the object. So abort is driven from here:
   *   the caller's signal aborts in-flight part uploads and ends the source; Upload then fails, aborts the
   *   multipart upload itself, and `done()` settles only after that.
   * - When one part fails, Upload stops reading the source but lets the part uploads already in flight finish
   *   (up to queueSize x partSize more bytes on a slow link). The first failed request aborts them (fail fast).
   * - When AbortMultipartUpload fails (s3rver answers 405), Upload throws that error instead of the original
   *   one; the abort is answered here so the original error survives, and the failure goes to `onWarning`.
   * - The requests that publish (PutObject for a one-part object, CompleteMultipartUpload) are not interrupted:
   *   whether the object was published would be unknown. If the caller aborted meanwhile, the published object is
   *   deleted afterwards, so an aborted put leaves nothing under its key.
   */
  async put (key: string, body: Readable, options: PutOptions = {}): Promise<PutResult> {
    const objectKey = this.objectKey(key)
    const { signal } = options
    if (aborted(signal)) {
      body.destroy()
      throw abortError(signal)
    }
    const partSize = choosePartSize(this.tuning.partSize, options.sizeHint)

    let sizeBytes = 0
    const counter = new Transform({
      transform (chunk: Buffer, _encoding, callback) { sizeBytes += chunk.length; callback(null, chunk) },
    })
    const stop = (err: Error): void => {
      if (!counter.destroyed) counter.destroy(err)
    }
    // The source's own failure, told apart from the errors `pipeline` passes back to it after a later stage
    // failed (a part upload, or Upload leaving its read loop, which destroys the stream with an AbortError).
    let sourceFailure: unknown
    const onSourceError = (err: unknown): void => { if (!counter.destroyed) sourceFailure ??= err }
    body.once('error', onSourceError)
    const failFast = new AbortController()
    const partSignal = signal === undefined ? failFast.signal : AbortSignal.any([signal, failFast.signal])
    let firstFailure: unknown

    const send = async (command: unknown): Promise<unknown> => {
      if (command instanceof AbortMultipartUploadCommand) {
        try {
          return await this.client.send(command, { abortSignal: AbortSignal.timeout(this.tuning.abortUploadTimeoutMs) })
        } catch (err) {
          this.warn('could not abort the multipart upload of a failed put; its parts stay stored (and billed) until a bucket lifecycle rule removes them', {
            bucket: this.bucket, key: objectKey, uploadId: command.input.UploadId, error: redact(err instanceof Error ? err.message : String(err), this.secrets), status: s3StatusOf(err),
          })
          return {}
        }
      }
      try {
        // Only part uploads take the signal; see the note above on the requests that publish.
        const sendOptions = command instanceof UploadPartCommand ? { abortSignal: partSignal } : {}
        return await this.client.send(command as PutObjectCommand, sendOptions)
      } catch (err) {
        if (!(isAbortError(err) && partSignal.aborted)) firstFailure ??= err
        failFast.abort()
        stop(err instanceof Error ? err : new Error(String(err)))
        throw err
      }
    }
    // Upload calls only `client.send(command)` and reads `client.config`.
    const client = new Proxy(this.client, {
      get: (target, property) => property === 'send' ? send : Reflect.get(target, property, target),
    })

    const stages: Array<Readable | Transform> = [body]
    if (this.rateLimit !== undefined) stages.push(throttle(this.rateLimit))
    stages.push(counter)
    const piping = pipeline(stages, signal === undefined ? {} : { signal })
    const upload = new Upload({
      client,
      params: {
        Bucket: this.bucket,
        Key: objectKey,
        Body: counter,
        ...(options.contentType === undefined ? {} : { ContentType: options.contentType }),
        ...(options.metadata === undefined ? {} : { Metadata: options.metadata }),
      },
      partSize,
      queueSize: this.tuning.queueSize,
      leavePartsOnError: false,
    })
    const done = upload.done().catch((err: unknown) => {
      stop(err instanceof Error ? err : new Error(String(err)))
      throw err
    })
    const [piped, uploaded] = await Promise.allSettled([piping, done])
    body.off('error', onSourceError)

    if (uploaded.status === 'fulfilled') {
      if (piped.status === 'fulfilled' && !aborted(signal)) return { key, sizeBytes }
      // Published, but the caller aborted while it was being committed: take it back.
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: objectKey }), { abortSignal: AbortSignal.timeout(this.tuning.abortUploadTimeoutMs) }).catch((err: unknown) => {
        this.warn('could not delete an object published by an aborted put', { bucket: this.bucket, key: objectKey, error: redact(err instanceof Error ? err.message : String(err), this.secrets) })
      })
      if (aborted(signal)) throw abortError(signal)
      throw sourceError(sourceFailure ?? (piped.status === 'rejected' ? piped.reason : new Error('source failed')))
    }
    if (aborted(signal)) throw abortError(signal)
    if (sourceFailure !== undefined) throw sourceError(sourceFailure)
    throw this.fail(firstFailure ?? uploaded.reason, 'put', objectKey)
  }

  async get (key: string, options: GetOptions = {}): Promise<Readable> {
    const objectKey = this.objectKey(key)
    const range = options.range === undefined ? undefined : checkRange(options.range)
    const { signal } = options
    throwIfAborted(signal)
    try {
      const out = await this.client.send(new GetObjectCommand({
        Bucket: this.bucket,
        Key: objectKey,
        ...(range === undefined ? {} : { Range: rangeHeader(range) }),
      }), signal === undefined ? {} : { abortSignal: signal })
      const body = out.Body
      if (!(body instanceof Readable)) throw new CloudPilotError('UPLOAD_FAILED', `get s3://${this.bucket}/${objectKey}: the SDK returned no readable body`)
      const stream = range === undefined ? body : this.exactRange(body, range, out.ContentRange, out.ContentLength, objectKey)
      // The request's own abort ends with a connection reset; make the stream fail with an AbortError instead.
      if (signal !== undefined) addAbortSignal(signal, stream)
      return stream
    } catch (err) {
      if (aborted(signal)) throw abortError(signal)
      // A range that starts at or after the end: an empty read (what reading a file there gives), not an error.
      if (range !== undefined && (s3StatusOf(err) === 416 || s3NameOf(err) === 'InvalidRange')) return Readable.from([])
      throw this.fail(err, 'get', objectKey)
    }
  }

  /** The requested range exactly, whatever range the server answered with (see `sliceStream`). */
  private exactRange (body: Readable, range: ByteRange, contentRange: string | undefined, contentLength: number | undefined, objectKey: string): Readable {
    const answered = parseContentRange(contentRange) ??
      (contentLength === undefined ? undefined : { start: 0, end: contentLength - 1, total: contentLength })
    if (answered === undefined) return body
    const wantedEnd = Math.min(range.end ?? Number.MAX_SAFE_INTEGER, answered.total === undefined ? answered.end : answered.total - 1)
    if (answered.start === range.start && answered.end === wantedEnd) return body
    if (answered.start > range.start || answered.end < wantedEnd) {
      body.destroy()
      throw new CloudPilotError('UPLOAD_FAILED', `get s3://${this.bucket}/${objectKey}: asked for ${rangeHeader(range)}, the server answered bytes ${answered.start}-${answered.end}`)
    }
    return sliceStream(body, range.start - answered.start, wantedEnd - range.start + 1)
  }

  async stat (key: string, options: CallOptions = {}): Promise<ObjectInfo | null> {
    const objectKey = this.objectKey(key)
    const { signal } = options
    throwIfAborted(signal)
    try {
      const head = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: objectKey }), signal === undefined ? {} : { abortSignal: signal })
      return { key, sizeBytes: head.ContentLength ?? 0, modifiedAt: head.LastModified ?? new Date(0) }
    } catch (err) {
      if (aborted(signal)) throw abortError(signal)
      if (s3StatusOf(err) !== 404) throw this.fail(err, 'stat', objectKey)
    }
    // A HEAD 404 has no body: it may be a missing bucket. Only a definite 404 on the bucket says so (a key
    // without s3:ListBucket gets 403 there, which is not a reason to fail the stat).
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }), signal === undefined ? {} : { abortSignal: signal })
    } catch (err) {
      if (aborted(signal)) throw abortError(signal)
      if (s3StatusOf(err) === 404) throw new CloudPilotError('CONTAINER_NOT_FOUND', `stat s3://${this.bucket}/${objectKey}: bucket ${this.bucket} not found`, { cause: err, hint: 'Create the bucket or fix its name (and region/endpoint); the credentials must also be allowed to list it.' })
    }
    return null
  }

  async delete (key: string, options: CallOptions = {}): Promise<void> {
    const objectKey = this.objectKey(key)
    const { signal } = options
    throwIfAborted(signal)
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: objectKey }), signal === undefined ? {} : { abortSignal: signal })
    } catch (err) {
      if (aborted(signal)) throw abortError(signal)
      // S3 answers 204 for a missing key; a few compatibles answer NoSuchKey.
      if (s3NameOf(err) === 'NoSuchKey') return
      throw this.fail(err, 'delete', objectKey)
    }
  }

  async list (prefix: string, options: ListOptions = {}): Promise<ListPage> {
    const { signal } = options
    throwIfAborted(signal)
    if (prefix.includes('\0')) throw new CloudPilotError('VALIDATION_FAILED', 'list prefix contains a NUL character')
    const limit = Math.min(Math.max(Math.trunc(options.limit ?? 1000), 1), 1000)
    let out
    try {
      out = await this.client.send(new ListObjectsV2Command({
        Bucket: this.bucket,
        Prefix: this.prefix + prefix,
        MaxKeys: limit,
        ...(options.cursor === undefined || options.cursor === null ? {} : { ContinuationToken: options.cursor }),
      }), signal === undefined ? {} : { abortSignal: signal })
    } catch (err) {
      if (aborted(signal)) throw abortError(signal)
      throw this.fail(err, 'list')
    }
    const items: ObjectInfo[] = []
    for (const object of out.Contents ?? []) {
      const full = object.Key
      if (full === undefined || !full.startsWith(this.prefix)) continue
      const key = full.slice(this.prefix.length)
      // Zero-byte "folder" markers made by web consoles are not objects of ours.
      if (key === '' || key.endsWith('/')) continue
      items.push({ key, sizeBytes: object.Size ?? 0, modifiedAt: object.LastModified ?? new Date(0) })
    }
    return { items, nextCursor: out.IsTruncated === true ? (out.NextContinuationToken ?? null) : null }
  }

  async test (options: CallOptions = {}): Promise<TestResult> {
    const { signal } = options
    throwIfAborted(signal)
    const started = performance.now()
    const key = `.cloudpilot-probe-${randomBytes(6).toString('hex')}`
    const objectKey = this.objectKey(key)
    const payload = Buffer.from(`cloudpilot probe ${new Date().toISOString()}\n`)
    const sendOptions = signal === undefined ? {} : { abortSignal: signal }
    try {
      await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: objectKey, Body: payload, ContentType: 'text/plain' }), sendOptions)
    } catch (err) {
      if (aborted(signal)) throw abortError(signal)
      throw this.fail(err, 'test', objectKey)
    }
    try {
      const chunks: Buffer[] = []
      for await (const chunk of await this.get(key, options)) chunks.push(chunk as Buffer)
      if (!Buffer.concat(chunks).equals(payload)) throw new CloudPilotError('VERIFY_FAILED', `test s3://${this.bucket}/${objectKey}: the probe object read back differs from what was written`)
    } catch (err) {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: objectKey })).catch(() => {})
      throw err
    }
    // Retention deletes objects: a key that may not delete fails the test.
    await this.delete(key, options)
    return { latencyMs: Math.round(performance.now() - started) }
  }

  async close (): Promise<void> {
    this.client.destroy()
  }
}

function parseEndpoint (raw: string): URL {
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(raw) ? raw : `https://${raw}`
  let url: URL
  try {
    url = new URL(withScheme)
  } catch {
    throw new CloudPilotError('VALIDATION_FAILED', 's3 endpoint is not a valid URL')
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new CloudPilotError('VALIDATION_FAILED', 's3 endpoint must be an http(s) URL')
  if (url.username !== '' || url.password !== '') throw new CloudPilotError('VALIDATION_FAILED', 's3 endpoint must not contain credentials; use accessKeyId/secretAccessKey')
  if (url.search !== '' || url.hash !== '') throw new CloudPilotError('VALIDATION_FAILED', 's3 endpoint must not have a query or fragment')
  return url
}

/** Whether the signal fired (a function, so TypeScript does not narrow `aborted` across awaits). */
function aborted (signal: AbortSignal | undefined): boolean {
  return signal?.aborted === true
}

/** The configured part size, raised when the expected size would need more than PLANNED_PARTS parts. */
function choosePartSize (base: number, sizeHint: number | undefined): number {
  if (sizeHint === undefined || !Number.isFinite(sizeHint) || sizeHint <= base * PLANNED_PARTS) return base
  return Math.min(MAX_PART_SIZE, Math.ceil(sizeHint / PLANNED_PARTS / MiB) * MiB)
}

/** The source stream failed: its own CloudPilotError (e.g. DUMP_FAILED) or AbortError passes through. */
function sourceError (err: unknown): Error {
  if (err instanceof CloudPilotError || isAbortError(err)) return err as Error
  const message = err instanceof Error ? err.message : String(err)
  return new CloudPilotError('UPLOAD_FAILED', `reading the data to upload failed: ${message}`, { cause: err })
}
