import { randomBytes } from 'node:crypto'
import { Readable } from 'node:stream'
import {
  AnonymousCredential, BlobServiceClient, StorageSharedKeyCredential, newPipeline,
  type ContainerClient, type RequestPolicy, type RequestPolicyFactory, type WebResource,
} from '@azure/storage-blob'
import { CloudPilotError, type AzureBlobConfig, type AzureBlobCredentials } from '@cloudpilot/protocol'
import type { CallOptions, GetOptions, ListOptions, ListPage, ObjectInfo, OpenOptions, PutOptions, PutResult, StorageDriver, TestResult } from './driver.ts'
import { aborted } from './abortable.ts'
import { checkRange, parseContentRange, sliceStream, type ByteRange } from './byte-range.ts'
import { azureCodeOf, azureStatusOf, mapAzureError, type AzureOperation } from './azure-error-map.ts'
import { downloadStream } from './download-stream.ts'
import { checkEndpointHost, guardedAgents } from './endpoint-guard.ts'
import { checkKey, normalisePrefix } from './key-path.ts'
import { abortError, isAbortError, throwIfAborted } from './node-error-map.ts'
import { withRetries } from './retry.ts'
import { probeRoundTrip } from './probe.ts'
import { redact } from './redact.ts'
import { chunks, sourceError, uploadSource } from './upload-source.ts'

const MiB = 1024 * 1024

/** Knobs with production defaults; tests may change them. */
export interface AzureTuning {
  /** Block size of a put. Memory per put is about (concurrency + 2) x blockSize. */
  blockSize: number
  /** Blocks staged at once per put. */
  concurrency: number
  /** Attempts per request for transient failures (network, 5xx, 503 ServerBusy); the SDK never retries 4xx. */
  maxTries: number
  /** One attempt of one request may take this long before it is abandoned (and retried). */
  tryTimeoutMs: number
  retryDelayMs: number
  maxRetryDelayMs: number
  /** Time allowed for the commit of a put and for removing an object published by an aborted put. */
  publishTimeoutMs: number
}

export const DEFAULT_AZURE_TUNING: AzureTuning = {
  blockSize: 4 * MiB,
  concurrency: 2,
  maxTries: 3,
  tryTimeoutMs: 120_000,
  retryDelayMs: 500,
  maxRetryDelayMs: 8_000,
  publishTimeoutMs: 60_000,
}

/** Azure allows 50,000 blocks per blob; keep headroom for a sizeHint that is a little low. */
const PLANNED_BLOCKS = 45_000
const MAX_BLOCK_SIZE = 4000 * MiB

interface Endpoint {
  url: URL
  credential: StorageSharedKeyCredential | AnonymousCredential
  /** SAS query (without '?'), appended to the service URL. */
  sas: string | undefined
  secrets: string[]
}

/**
 * `azure_blob`: a container of an Azure Storage account (@azure/storage-blob).
 *
 * Credentials: a connection string (account key or SAS form), or accountName + accountKey (+ accountUrl for
 * sovereign clouds and emulators), or a SAS token + accountUrl.
 *
 * put streams the body as blocks (Put Block, `concurrency` at once) and publishes them with one Put Block List:
 * a block blob exists under its name only from that commit on, so a failed or aborted put never shows a partial
 * object, and an overwrite replaces the old blob in one step. The blocks of an interrupted put stay uncommitted
 * and invisible; Azure discards uncommitted blocks after a week (there is no call that deletes them without
 * committing). Blocks are staged here rather than through `BlockBlobClient.uploadStream`, which in 12.32 does not
 * pass the abort signal to its Put Block requests (they run on after an abort) but does pass it to the commit (an
 * abort during the commit leaves it unknown whether the blob was published). Here the commit is never interrupted;
 * if the caller aborted meanwhile, the published blob is deleted afterwards, as the s3 driver does.
 *
 * Endpoints go through the SSRF guard (checked on every connection) and http is only accepted together with
 * private endpoints (emulators): a SAS token is a bearer credential.
 */
export class AzureBlobDriver implements StorageDriver {
  readonly type = 'azure_blob' as const
  readonly container: ContainerClient
  readonly prefix: string
  private readonly containerName: string
  private readonly endpoint: string
  private readonly secrets: readonly string[]
  private readonly rateLimit: number | undefined
  private readonly tuning: AzureTuning
  private readonly onWarning: OpenOptions['onWarning']
  private readonly agents: ReturnType<typeof guardedAgents>

  constructor (config: AzureBlobConfig, credentials: AzureBlobCredentials, options: OpenOptions = {}, tuning: Partial<AzureTuning> = {}) {
    const container = typeof config.container === 'string' ? config.container.trim() : ''
    if (!/^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$/.test(container)) throw new CloudPilotError('VALIDATION_FAILED', 'azure_blob container must be 3-63 lowercase letters, digits and single hyphens (Azure\'s naming rules)')
    const allowPrivate = options.allowPrivateEndpoints === true
    const endpoint = resolveEndpoint(config, credentials, allowPrivate)
    checkEndpointHost(endpoint.url.hostname, allowPrivate)
    this.containerName = container
    this.prefix = normalisePrefix(config.prefix)
    this.endpoint = endpoint.url.origin
    this.secrets = endpoint.secrets
    this.rateLimit = config.rateLimitBytesPerSecond
    this.tuning = { ...DEFAULT_AZURE_TUNING, ...tuning }
    this.onWarning = options.onWarning
    this.agents = guardedAgents(allowPrivate)

    const pipeline = newPipeline(endpoint.credential, {
      retryOptions: {
        maxTries: this.tuning.maxTries,
        tryTimeoutInMs: this.tuning.tryTimeoutMs,
        retryDelayInMs: this.tuning.retryDelayMs,
        maxRetryDelayInMs: this.tuning.maxRetryDelayMs,
      },
      keepAliveOptions: { enable: true },
    })
    // Every request goes out through the guarded agents (their lookup refuses addresses the guard does not allow).
    const agents = this.agents
    const tryTimeoutMs = this.tuning.tryTimeoutMs
    const guard: RequestPolicyFactory = {
      create: (next: RequestPolicy): RequestPolicy => ({
        sendRequest: async (request: WebResource) => {
          request.agent = request.url.startsWith('https:') ? agents.httpsAgent : agents.httpAgent
          // The SDK's tryTimeoutInMs only asks the service for a server-side timeout: bound the wait for the
          // answer's headers here, so a server that never answers fails (UNREACHABLE, retried by `call`). Not the
          // request's own `timeout`: the SDK leaves that timer running when a request fails, holding the process.
          const timeout = new AbortController()
          const original = request.abortSignal
          if (original !== undefined && !(original instanceof AbortSignal)) return await next.sendRequest(request)
          request.abortSignal = original === undefined ? timeout.signal : AbortSignal.any([original, timeout.signal])
          const timer = setTimeout(() => { timeout.abort() }, tryTimeoutMs)
          timer.unref()
          try {
            return await next.sendRequest(request)
          } finally {
            clearTimeout(timer)
          }
        },
      }),
    }
    // newPipeline keeps the credential aside; extra factories run before signing and retries, once per call.
    pipeline.factories.push(guard)
    const serviceUrl = endpoint.url.href.replace(/\/$/, '') + (endpoint.sas === undefined ? '' : `?${endpoint.sas}`)
    this.container = new BlobServiceClient(serviceUrl, pipeline).getContainerClient(container)
  }

  private blobName (key: string): string {
    return this.prefix + checkKey(key)
  }

  private fail (err: unknown, op: AzureOperation, signal: AbortSignal | undefined, blob?: string): Error {
    return mapAzureError(err, { op, container: this.containerName, endpoint: this.endpoint, secrets: this.secrets, callerAborted: aborted(signal), ...(blob === undefined ? {} : { blob }) })
  }

  /**
   * Runs one SDK call, trying again when an attempt timed out on the client (the SDK retries network errors and
   * 5xx itself, but gives up on its own timeouts at once).
   */
  private async call<T> (signal: AbortSignal | undefined, fn: () => Promise<T>): Promise<T> {
    return await withRetries(fn, {
      policy: { attempts: this.tuning.maxTries, baseDelayMs: this.tuning.retryDelayMs, maxDelayMs: this.tuning.maxRetryDelayMs },
      signal,
      retryable: (err) => isAbortError(err) && !aborted(signal),
    })
  }

  private warn (message: string, details: Record<string, unknown>): void {
    try { this.onWarning?.(redact(message, this.secrets), details) } catch { /* a broken logger must not fail a put */ }
  }

  async put (key: string, body: Readable, options: PutOptions = {}): Promise<PutResult> {
    const name = this.blobName(key)
    const { signal } = options
    if (aborted(signal)) {
      body.destroy()
      throw abortError(signal)
    }
    const blob = this.container.getBlockBlobClient(name)
    const blockSize = chooseBlockSize(this.tuning.blockSize, options.sizeHint)
    const source = uploadSource(body, { rateLimitBytesPerSecond: this.rateLimit, signal })
    const stopStaging = new AbortController()
    const stageSignal = signal === undefined ? stopStaging.signal : AbortSignal.any([signal, stopStaging.signal])
    const uploadId = randomBytes(8).toString('hex')
    const blockIds: string[] = []
    const inFlight = new Set<Promise<void>>()
    let stageFailure: unknown
    let readFailure: unknown
    try {
      for await (const chunk of chunks(source.stream, blockSize)) {
        if (stageFailure !== undefined) break
        if (chunk.data.length === 0) break // an empty object: commit an empty block list
        const id = Buffer.from(`${uploadId}-${String(blockIds.length).padStart(6, '0')}`).toString('base64')
        blockIds.push(id)
        const data = chunk.data
        const staged = this.call(stageSignal, async () => await blob.stageBlock(id, data, data.length, { abortSignal: stageSignal })).then(() => {}, (err: unknown) => {
          stageFailure ??= err
          stopStaging.abort()
        })
        inFlight.add(staged)
        void staged.finally(() => inFlight.delete(staged))
        while (inFlight.size >= this.tuning.concurrency && stageFailure === undefined) await Promise.race(inFlight)
      }
    } catch (err) {
      readFailure = err
    }
    if (stageFailure !== undefined || readFailure !== undefined || aborted(signal)) stopStaging.abort()
    await Promise.all(inFlight)
    if (!source.stream.destroyed && (stageFailure !== undefined || readFailure !== undefined)) source.stream.destroy()
    await source.settled
    if (aborted(signal)) throw abortError(signal)
    const fromSource = source.sourceFailure()
    if (fromSource !== undefined) throw sourceError(fromSource)
    if (stageFailure !== undefined) throw this.fail(stageFailure, 'put', signal, name)
    if (readFailure !== undefined) throw sourceError(readFailure)

    // The commit publishes the blob; it is not interrupted (see the class notes).
    try {
      await this.call(undefined, async () => await blob.commitBlockList(blockIds, {
        abortSignal: AbortSignal.timeout(this.tuning.publishTimeoutMs),
        ...(options.contentType === undefined ? {} : { blobHTTPHeaders: { blobContentType: options.contentType } }),
        ...(options.metadata === undefined ? {} : { metadata: options.metadata }),
      }))
    } catch (err) {
      throw this.fail(err, 'put', undefined, name)
    }
    if (aborted(signal)) {
      await blob.deleteIfExists({ abortSignal: AbortSignal.timeout(this.tuning.publishTimeoutMs) }).catch((err: unknown) => {
        this.warn('could not delete a blob published by an aborted put', { container: this.containerName, blob: name, error: redact(err instanceof Error ? err.message : String(err), this.secrets) })
      })
      throw abortError(signal)
    }
    return { key, sizeBytes: source.bytes() }
  }

  async get (key: string, options: GetOptions = {}): Promise<Readable> {
    const name = this.blobName(key)
    const range = options.range === undefined ? undefined : checkRange(options.range)
    const { signal } = options
    throwIfAborted(signal)
    const blob = this.container.getBlobClient(name)
    let response
    try {
      response = await this.call(signal, async () => await blob.download(range?.start ?? 0, range?.end === undefined ? undefined : range.end - range.start + 1, {
        ...(signal === undefined ? {} : { abortSignal: signal }),
        maxRetryRequests: this.tuning.maxTries,
      }))
    } catch (err) {
      if (aborted(signal)) throw abortError(signal)
      // A range that starts at or after the end: an empty read (what reading a file there gives), not an error.
      if (range !== undefined && (azureStatusOf(err) === 416 || azureCodeOf(err) === 'InvalidRange')) return Readable.from([])
      throw this.fail(err, 'get', signal, name)
    }
    const body = response.readableStreamBody as Readable | undefined
    if (body === undefined) throw new CloudPilotError('UPLOAD_FAILED', `get azure ${this.containerName}/${name}: the SDK returned no readable body`)
    const exact = range === undefined ? body : exactRange(body, range, response.contentRange, response.contentLength)
    return downloadStream(exact, (err) => this.fail(err, 'get', signal, name), signal)
  }

  async stat (key: string, options: CallOptions = {}): Promise<ObjectInfo | null> {
    const name = this.blobName(key)
    const { signal } = options
    throwIfAborted(signal)
    try {
      const props = await this.call(signal, async () => await this.container.getBlobClient(name).getProperties(signal === undefined ? {} : { abortSignal: signal }))
      return { key, sizeBytes: props.contentLength ?? 0, modifiedAt: props.lastModified ?? new Date(0) }
    } catch (err) {
      if (aborted(signal)) throw abortError(signal)
      // A HEAD names the missing thing in x-ms-error-code: BlobNotFound (null) or ContainerNotFound (an error).
      if (azureStatusOf(err) === 404 && azureCodeOf(err) !== 'ContainerNotFound') return null
      throw this.fail(err, 'stat', signal, name)
    }
  }

  async delete (key: string, options: CallOptions = {}): Promise<void> {
    const name = this.blobName(key)
    const { signal } = options
    throwIfAborted(signal)
    try {
      await this.call(signal, async () => await this.container.getBlobClient(name).deleteIfExists({ deleteSnapshots: 'include', ...(signal === undefined ? {} : { abortSignal: signal }) }))
    } catch (err) {
      if (aborted(signal)) throw abortError(signal)
      throw this.fail(err, 'delete', signal, name)
    }
  }

  async list (prefix: string, options: ListOptions = {}): Promise<ListPage> {
    const { signal } = options
    throwIfAborted(signal)
    if (typeof prefix !== 'string' || prefix.includes('\0')) throw new CloudPilotError('VALIDATION_FAILED', 'list prefix contains a NUL character')
    const limit = Math.min(Math.max(Math.trunc(options.limit ?? 1000), 1), 5000)
    const cursor = options.cursor ?? undefined
    try {
      const page = await this.call(signal, async () => await this.container.listBlobsFlat({ prefix: this.prefix + prefix, ...(signal === undefined ? {} : { abortSignal: signal }) })
        .byPage({ maxPageSize: limit, ...(cursor === undefined || cursor === '' ? {} : { continuationToken: cursor }) }).next())
      if (page.done === true) return { items: [], nextCursor: null }
      const items: ObjectInfo[] = []
      for (const item of page.value.segment.blobItems) {
        if (!item.name.startsWith(this.prefix)) continue
        const k = item.name.slice(this.prefix.length)
        if (k === '' || k.endsWith('/')) continue
        items.push({ key: k, sizeBytes: item.properties.contentLength ?? 0, modifiedAt: item.properties.lastModified })
      }
      const next = page.value.continuationToken
      return { items, nextCursor: typeof next === 'string' && next !== '' ? next : null }
    } catch (err) {
      if (aborted(signal)) throw abortError(signal)
      throw this.fail(err, 'list', signal)
    }
  }

  async test (options: CallOptions = {}): Promise<TestResult> {
    return await probeRoundTrip(this, options)
  }

  async close (): Promise<void> {
    this.agents.httpAgent.destroy()
    this.agents.httpsAgent.destroy()
  }
}

/** Block size: the configured one, raised when the expected size would need more than PLANNED_BLOCKS blocks. */
function chooseBlockSize (base: number, sizeHint: number | undefined): number {
  if (sizeHint === undefined || !Number.isFinite(sizeHint) || sizeHint <= base * PLANNED_BLOCKS) return base
  return Math.min(MAX_BLOCK_SIZE, Math.ceil(sizeHint / PLANNED_BLOCKS / MiB) * MiB)
}

/** The requested range exactly, whatever range the service answered with. */
function exactRange (body: Readable, range: ByteRange, contentRange: string | undefined, contentLength: number | undefined): Readable {
  const answered = parseContentRange(contentRange) ??
    (contentLength === undefined ? undefined : { start: 0, end: contentLength - 1, total: contentLength })
  if (answered === undefined) return body
  const wantedEnd = Math.min(range.end ?? Number.MAX_SAFE_INTEGER, answered.total === undefined ? answered.end : answered.total - 1)
  if (wantedEnd < range.start) { body.destroy(); return Readable.from([]) }
  if (answered.start === range.start && answered.end === wantedEnd) return body
  if (answered.start > range.start || answered.end < wantedEnd) {
    body.destroy()
    throw new CloudPilotError('UPLOAD_FAILED', `asked for bytes ${range.start}-${range.end ?? ''}, the service answered bytes ${answered.start}-${answered.end}`)
  }
  return sliceStream(body, range.start - answered.start, wantedEnd - range.start + 1)
}

/** `Key=Value;...` of a storage connection string, keys compared case-insensitively. */
function parseConnectionString (text: string): Map<string, string> {
  const parts = new Map<string, string>()
  for (const segment of text.split(';')) {
    const eq = segment.indexOf('=')
    if (eq <= 0) continue
    parts.set(segment.slice(0, eq).trim().toLowerCase(), segment.slice(eq + 1).trim())
  }
  return parts
}

function parseAccountUrl (raw: string, allowPrivate: boolean, what: string): URL {
  let url: URL
  try {
    url = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(raw) ? raw : `https://${raw}`)
  } catch {
    throw new CloudPilotError('VALIDATION_FAILED', `azure_blob ${what} is not a valid URL`)
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new CloudPilotError('VALIDATION_FAILED', `azure_blob ${what} must be an https URL`)
  if (url.protocol === 'http:' && !allowPrivate) throw new CloudPilotError('VALIDATION_FAILED', `azure_blob ${what} must use https (plain http only for emulators on private endpoints)`)
  if (url.username !== '' || url.password !== '') throw new CloudPilotError('VALIDATION_FAILED', `azure_blob ${what} must not contain credentials`)
  if (url.search !== '' || url.hash !== '') throw new CloudPilotError('VALIDATION_FAILED', `azure_blob ${what} must not have a query: put a SAS token into credentials.sasToken`)
  return url
}

function cleanSas (raw: string): string {
  const sas = raw.trim().replace(/^\?/, '')
  if (sas === '' || !/(^|&)sig=/.test(sas)) throw new CloudPilotError('VALIDATION_FAILED', 'azure_blob sasToken must be a SAS query string (…&sig=…)')
  return sas
}

function resolveEndpoint (config: AzureBlobConfig, credentials: AzureBlobCredentials, allowPrivate: boolean): Endpoint {
  const str = (v: unknown): string => typeof v === 'string' ? v.trim() : ''
  const connectionString = str(credentials.connectionString)
  const configuredUrl = str(config.accountUrl)
  if (connectionString !== '') {
    const parts = parseConnectionString(connectionString)
    if (parts.has('usedevelopmentstorage')) throw new CloudPilotError('VALIDATION_FAILED', 'azure_blob: give the emulator\'s full connection string (with BlobEndpoint) instead of UseDevelopmentStorage=true')
    const accountName = parts.get('accountname') ?? ''
    const accountKey = parts.get('accountkey') ?? ''
    const sas = parts.get('sharedaccesssignature')
    const blobEndpoint = parts.get('blobendpoint')
    const protocol = (parts.get('defaultendpointsprotocol') ?? 'https').toLowerCase()
    const suffix = parts.get('endpointsuffix') ?? 'core.windows.net'
    let raw = blobEndpoint ?? configuredUrl
    if (raw === '') {
      if (accountName === '') throw new CloudPilotError('VALIDATION_FAILED', 'azure_blob connection string has neither BlobEndpoint nor AccountName')
      raw = `${protocol}://${accountName}.blob.${suffix}`
    }
    const url = parseAccountUrl(raw, allowPrivate, 'connection string endpoint')
    if (accountKey !== '') {
      if (accountName === '') throw new CloudPilotError('VALIDATION_FAILED', 'azure_blob connection string has an AccountKey but no AccountName')
      return { url, credential: new StorageSharedKeyCredential(accountName, accountKey), sas: undefined, secrets: [accountKey, connectionString] }
    }
    if (sas !== undefined && sas !== '') {
      const clean = cleanSas(sas)
      return { url, credential: new AnonymousCredential(), sas: clean, secrets: [clean, connectionString, ...sigOf(clean)] }
    }
    throw new CloudPilotError('VALIDATION_FAILED', 'azure_blob connection string has neither AccountKey nor SharedAccessSignature')
  }
  const accountName = str(credentials.accountName)
  const accountKey = str(credentials.accountKey)
  if (accountName !== '' && accountKey !== '') {
    if (!/^[a-z0-9]{3,24}$/.test(accountName) && configuredUrl === '') throw new CloudPilotError('VALIDATION_FAILED', 'azure_blob accountName must be 3-24 lowercase letters and digits')
    const url = parseAccountUrl(configuredUrl !== '' ? configuredUrl : `https://${accountName}.blob.core.windows.net`, allowPrivate, 'accountUrl')
    return { url, credential: new StorageSharedKeyCredential(accountName, accountKey), sas: undefined, secrets: [accountKey] }
  }
  const sasToken = str(credentials.sasToken)
  if (sasToken !== '') {
    const raw = configuredUrl !== '' ? configuredUrl : (accountName !== '' ? `https://${accountName}.blob.core.windows.net` : '')
    if (raw === '') throw new CloudPilotError('VALIDATION_FAILED', 'azure_blob with a sasToken needs config.accountUrl (https://<account>.blob.core.windows.net)')
    const clean = cleanSas(sasToken)
    return { url: parseAccountUrl(raw, allowPrivate, 'accountUrl'), credential: new AnonymousCredential(), sas: clean, secrets: [clean, ...sigOf(clean)] }
  }
  throw new CloudPilotError('VALIDATION_FAILED', 'azure_blob destination needs credentials: connectionString, accountName + accountKey, or sasToken (+ accountUrl)')
}

/** The signature in a SAS (its secret part), decoded and URL-encoded: either may show up in an error. */
function sigOf (sas: string): string[] {
  const sig = new URLSearchParams(sas).get('sig') ?? ''
  return sig === '' ? [] : [sig, encodeURIComponent(sig), /sig=([^&]*)/.exec(sas)?.[1] ?? sig]
}

