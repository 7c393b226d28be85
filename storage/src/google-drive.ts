import { Readable } from 'node:stream'
import type { ReadableStream as WebReadableStream } from 'node:stream/web'
import { CloudPilotError, type GoogleDriveConfig, type GoogleDriveCredentials } from '@cloudpilot/protocol'
import type { CallOptions, GetOptions, ListOptions, ListPage, ObjectInfo, OpenOptions, PutOptions, PutResult, StorageDriver, TestResult } from './driver.ts'
import { aborted } from './abortable.ts'
import { checkRange, parseContentRange, rangeHeader, sliceStream, type ByteRange } from './byte-range.ts'
import { downloadStream } from './download-stream.ts'
import { AccessTokenSource, GOOGLE_TOKEN_URL, parseServiceAccountJson, type TokenGrant } from './google-auth.ts'
import { DRIVE_FOLDER_HINT, DriveApi, driveQueryString } from './google-drive-api.ts'
import { mapTransportError, transientStatus } from './http-error-map.ts'
import { parseServiceUrl } from './http-endpoint.ts'
import { checkKey } from './key-path.ts'
import { abortError, throwIfAborted } from './node-error-map.ts'
import { probeRoundTrip } from './probe.ts'
import { DEFAULT_RETRY, backoffDelay, sleep, type RetryPolicy } from './retry.ts'
import { chunks, sourceError, uploadSource, type Chunk } from './upload-source.ts'

const MiB = 1024 * 1024
const DEFAULT_ROOT = 'https://www.googleapis.com/'
const SCOPES = ['https://www.googleapis.com/auth/drive']
const FOLDER_MIME = 'application/vnd.google-apps.folder'
const FILE_FIELDS = 'id,name,size,modifiedTime,mimeType'

/** Knobs with production defaults; tests may change them. */
export interface DriveTuning {
  /** Resumable upload chunk (a multiple of 256 KiB); about two chunks are held in memory per put. */
  chunkSize: number
  /** Time allowed until an answer's headers (sending a chunk included). */
  timeoutMs: number
  retry: RetryPolicy
  /** How long a successful check that the folder exists is trusted. */
  folderCheckTtlMs: number
}

export const DEFAULT_DRIVE_TUNING: DriveTuning = {
  chunkSize: 8 * MiB,
  timeoutMs: 120_000,
  retry: DEFAULT_RETRY,
  folderCheckTtlMs: 5 * 60_000,
}

interface DriveFile { id: string, name: string, size?: string, modifiedTime?: string, mimeType?: string }

/**
 * `google_drive`: a folder in Google Drive, over the Drive v3 REST API with fetch (no googleapis SDK).
 *
 * Keys and files: a key is the name of one file directly in the folder, '/' included (Drive names may contain
 * '/'); no subfolders are made, so listing by prefix is listing the folder and filtering names, and a key prefix
 * never depends on folder structure. Drive allows several files with one name: reads take the newest, delete
 * removes them all, list shows each name once.
 *
 * put uses a resumable upload (POST …/upload/drive/v3/files?uploadType=resumable, then chunks PUT to the session
 * URI; Drive answers 308 until the last chunk): a new file exists only once the session completes, and an
 * overwrite uploads a new revision of the existing file (PATCH), which replaces its content only when complete.
 * A chunk that fails transiently is resumed from the offset the session reports. An interrupted session is left
 * to expire (Drive documents no cancel call; sessions expire after a week and create nothing). If the caller
 * aborts while the last chunk completes the file, the file is deleted again, as the other drivers do.
 *
 * Credentials: a service account key (its JWT is exchanged at the key's token_uri; the folder must be shared with
 * the service account, and since service accounts have no storage of their own it should be in a shared drive)
 * or clientId + clientSecret + refreshToken of a user (token endpoint `tokenUrl`).
 */
export class GoogleDriveDriver implements StorageDriver {
  readonly type = 'google_drive' as const
  readonly folderId: string
  private readonly api: DriveApi
  private readonly tokens: AccessTokenSource
  private readonly rateLimit: number | undefined
  private readonly tuning: DriveTuning
  private folderCheckedAt = 0

  constructor (config: GoogleDriveConfig, credentials: GoogleDriveCredentials, options: OpenOptions = {}, tuning: Partial<DriveTuning> = {}) {
    const folderId = typeof config.folderId === 'string' ? config.folderId.trim() : ''
    if (!/^[A-Za-z0-9_-]{1,200}$/.test(folderId)) throw new CloudPilotError('VALIDATION_FAILED', `google_drive folderId must be a Drive folder id (the last part of drive.google.com/drive/folders/<folderId>). ${DRIVE_FOLDER_HINT}`)
    const allowPrivate = options.allowPrivateEndpoints === true
    const rawRoot = typeof config.rootUrl === 'string' && config.rootUrl.trim() !== '' ? config.rootUrl.trim() : DEFAULT_ROOT
    const root = parseServiceUrl(rawRoot.endsWith('/') ? rawRoot : `${rawRoot}/`, 'google_drive rootUrl', allowPrivate)
    this.tuning = { ...DEFAULT_DRIVE_TUNING, ...tuning }
    if (this.tuning.chunkSize % (256 * 1024) !== 0) throw new CloudPilotError('VALIDATION_FAILED', 'google_drive chunk size must be a multiple of 256 KiB')
    this.folderId = folderId
    this.rateLimit = config.rateLimitBytesPerSecond

    let grant: TokenGrant
    const str = (v: unknown): string => typeof v === 'string' ? v.trim() : ''
    if (str(credentials.serviceAccountJson) !== '') {
      grant = { kind: 'service_account', key: parseServiceAccountJson(str(credentials.serviceAccountJson), allowPrivate), scopes: SCOPES }
    } else if (str(credentials.clientId) !== '' && str(credentials.clientSecret) !== '' && str(credentials.refreshToken) !== '') {
      const tokenUrl = parseServiceUrl(str(config.tokenUrl) !== '' ? str(config.tokenUrl) : GOOGLE_TOKEN_URL, 'google_drive tokenUrl', allowPrivate)
      grant = { kind: 'refresh_token', clientId: str(credentials.clientId), clientSecret: str(credentials.clientSecret), refreshToken: str(credentials.refreshToken), tokenUrl }
    } else {
      throw new CloudPilotError('VALIDATION_FAILED', 'google_drive destination needs serviceAccountJson, or clientId + clientSecret + refreshToken')
    }
    this.tokens = new AccessTokenSource(grant, { allowPrivate, timeoutMs: 30_000, retry: this.tuning.retry, label: `google_drive folder ${folderId}` })
    this.api = new DriveApi({ root, tokens: this.tokens, allowPrivate, timeoutMs: this.tuning.timeoutMs, retry: this.tuning.retry, folderId })
  }

  private what (op: string, key?: string): string {
    return key === undefined ? `${op} google_drive folder ${this.folderId}` : `${op} google_drive ${this.folderId}/${key}`
  }

  /** CONTAINER_NOT_FOUND unless the folder exists, is a folder and is not in the trash (cached a while). */
  private async checkFolder (signal: AbortSignal | undefined, force = false): Promise<void> {
    if (!force && Date.now() - this.folderCheckedAt < this.tuning.folderCheckTtlMs) return
    const what = this.what('check')
    const response = await this.api.call({ method: 'GET', path: `drive/v3/files/${encodeURIComponent(this.folderId)}`, query: { fields: 'id,name,mimeType,trashed', supportsAllDrives: 'true' }, signal, what, idempotent: true })
    const folder = await this.api.json<{ mimeType?: string, trashed?: boolean }>(response, what)
    if (folder.mimeType !== FOLDER_MIME) throw new CloudPilotError('CONTAINER_NOT_FOUND', `${what}: ${this.folderId} is not a folder`, { hint: DRIVE_FOLDER_HINT })
    if (folder.trashed === true) throw new CloudPilotError('CONTAINER_NOT_FOUND', `${what}: the folder is in the trash`, { hint: 'Restore the folder from the trash, or pick another one.' })
    this.folderCheckedAt = Date.now()
  }

  /** Every page of a files.list query in the folder. */
  private async query (q: string, signal: AbortSignal | undefined, what: string): Promise<DriveFile[]> {
    const files: DriveFile[] = []
    let pageToken: string | undefined
    for (let page = 0; page < 10_000; page++) {
      const response = await this.api.call({
        method: 'GET',
        path: 'drive/v3/files',
        query: {
          q: `${driveQueryString(this.folderId)} in parents and trashed = false${q === '' ? '' : ` and ${q}`}`,
          fields: `nextPageToken,files(${FILE_FIELDS})`,
          pageSize: '1000',
          supportsAllDrives: 'true',
          includeItemsFromAllDrives: 'true',
          spaces: 'drive',
          ...(pageToken === undefined ? {} : { pageToken }),
        },
        signal,
        what,
        idempotent: true,
      })
      const data = await this.api.json<{ files?: DriveFile[], nextPageToken?: string }>(response, what)
      files.push(...(data.files ?? []).filter((f) => f.mimeType !== FOLDER_MIME))
      pageToken = data.nextPageToken
      if (pageToken === undefined || pageToken === '') break
    }
    return files
  }

  /** The files named `key`, newest first. */
  private async find (key: string, signal: AbortSignal | undefined, op: string): Promise<DriveFile[]> {
    const files = await this.query(`name = ${driveQueryString(key)}`, signal, this.what(op, key))
    return files.filter((f) => f.name === key).sort(newestFirst)
  }

  async put (key: string, body: Readable, options: PutOptions = {}): Promise<PutResult> {
    checkKey(key)
    const { signal } = options
    if (aborted(signal)) {
      body.destroy()
      throw abortError(signal)
    }
    const what = this.what('put', key)
    const contentType = options.contentType ?? 'application/octet-stream'
    let session: URL
    let existing: DriveFile | undefined
    try {
      existing = (await this.find(key, signal, 'put'))[0]
      const query = { uploadType: 'resumable', supportsAllDrives: 'true', fields: FILE_FIELDS }
      const headers = { 'content-type': 'application/json; charset=UTF-8', 'x-upload-content-type': contentType }
      const metadata = { ...(options.metadata === undefined ? {} : { appProperties: options.metadata }) }
      const response = existing === undefined
        ? await this.api.call({ method: 'POST', path: 'upload/drive/v3/files', query, headers, body: JSON.stringify({ name: key, parents: [this.folderId], mimeType: contentType, ...metadata }), signal, what, idempotent: true })
        : await this.api.call({ method: 'PATCH', path: `upload/drive/v3/files/${encodeURIComponent(existing.id)}`, query, headers, body: JSON.stringify({ mimeType: contentType, ...metadata }), signal, what, idempotent: true })
      await response.body?.cancel()
      const location = response.headers.get('location')
      if (location === null) throw new CloudPilotError('UPLOAD_FAILED', `${what}: the API opened no upload session (no Location)`, { retryable: true })
      session = new URL(location, this.api.origin)
      // The session URI comes from a Location header: never send the data to another origin.
      if (session.origin !== this.api.origin) throw new CloudPilotError('UPLOAD_FAILED', `${what}: the upload session is on another origin (${session.origin})`, { retryable: false })
    } catch (err) {
      body.destroy()
      if (aborted(signal)) throw abortError(signal)
      throw err
    }

    const source = uploadSource(body, { rateLimitBytesPerSecond: this.rateLimit, signal })
    let file: DriveFile | undefined
    try {
      for await (const chunk of chunks(source.stream, this.tuning.chunkSize)) {
        file = await this.sendChunk(session, chunk, signal, what)
      }
    } catch (err) {
      if (!source.stream.destroyed) source.stream.destroy()
      await source.settled
      if (aborted(signal)) {
        await this.takeBack(session, what)
        throw abortError(signal)
      }
      const fromSource = source.sourceFailure()
      if (fromSource !== undefined) throw sourceError(fromSource)
      throw err
    }
    if (file === undefined) throw new CloudPilotError('UPLOAD_FAILED', `${what}: the upload ended without the file`, { retryable: true })
    if (aborted(signal)) {
      await this.deleteQuietly(file.id)
      throw abortError(signal)
    }
    return { key, sizeBytes: source.bytes() }
  }

  /**
   * Sends one chunk to the session; resumes from the session's own offset after a 308 that took less than was
   * sent, or after a transient failure (status query: a PUT with `Content-Range: bytes *\/total-or-*`). Returns
   * the file once the session completed.
   */
  private async sendChunk (session: URL, chunk: Chunk, callerSignal: AbortSignal | undefined, what: string): Promise<DriveFile | undefined> {
    // The last chunk publishes the file: it is not interrupted (whether it was published would be unknown);
    // `put` deletes the file again if the caller aborted meanwhile.
    const signal = chunk.last ? undefined : callerSignal
    const end = chunk.offset + chunk.data.length
    const total = chunk.last ? String(end) : '*'
    let sent = chunk.offset
    let failures = 0
    for (;;) {
      let response: Response
      try {
        const part = chunk.data.subarray(sent - chunk.offset)
        const range = part.length === 0 ? `bytes */${total}` : `bytes ${sent}-${end - 1}/${total}`
        response = await this.api.call({ method: 'PUT', path: session, headers: { 'content-range': range }, body: part, signal, accept: [308], anonymous: true, what, idempotent: false })
      } catch (err) {
        if (aborted(signal)) throw abortError(signal)
        if (!(err instanceof CloudPilotError && err.retryable) || ++failures >= this.tuning.retry.attempts) throw err
        await sleep(backoffDelay(failures, this.tuning.retry), signal)
        const status = await this.sessionStatus(session, total, signal, what)
        if (status.file !== undefined) return status.file
        if (status.offset < chunk.offset || status.offset > end) throw new CloudPilotError('UPLOAD_FAILED', `${what}: the upload session holds ${status.offset} bytes, this chunk is ${chunk.offset}-${end}`, { retryable: true })
        sent = status.offset
        continue
      }
      if (response.status === 308) {
        await response.body?.cancel()
        const persisted = persistedOf(response)
        if (persisted < sent || persisted > end) throw new CloudPilotError('UPLOAD_FAILED', `${what}: the upload session answered an unexpected offset (${persisted})`, { retryable: true })
        if (persisted === end) {
          if (chunk.last) throw new CloudPilotError('UPLOAD_FAILED', `${what}: the upload session has every byte but did not complete`, { retryable: true })
          return undefined
        }
        sent = persisted // took part of it: send the rest
        continue
      }
      const file = await this.api.json<DriveFile>(response, what)
      if (!chunk.last) throw new CloudPilotError('UPLOAD_FAILED', `${what}: the upload session completed before the last chunk`, { retryable: true })
      return file
    }
  }

  private async sessionStatus (session: URL, total: string, signal: AbortSignal | undefined, what: string): Promise<{ offset: number, file?: DriveFile }> {
    const response = await this.api.call({ method: 'PUT', path: session, headers: { 'content-range': `bytes */${total}` }, body: Buffer.alloc(0), signal, accept: [308], anonymous: true, what, idempotent: true })
    if (response.status === 308) {
      await response.body?.cancel()
      return { offset: persistedOf(response) }
    }
    return { offset: -1, file: await this.api.json<DriveFile>(response, what) }
  }

  /** After an abort: if the session completed after all (the abort raced the last chunk), delete what it made. */
  private async takeBack (session: URL, what: string): Promise<void> {
    try {
      const status = await this.sessionStatus(session, '*', AbortSignal.timeout(this.tuning.timeoutMs), what)
      if (status.file !== undefined) await this.deleteQuietly(status.file.id)
    } catch { /* unfinished, expired or unreachable: nothing was published by this put */ }
  }

  private async deleteQuietly (id: string): Promise<void> {
    await this.api.call({ method: 'DELETE', path: `drive/v3/files/${encodeURIComponent(id)}`, query: { supportsAllDrives: 'true' }, signal: AbortSignal.timeout(this.tuning.timeoutMs), accept: [404], what: this.what('delete'), idempotent: true })
      .then(async (r) => { await r.body?.cancel() }, () => {})
  }

  async get (key: string, options: GetOptions = {}): Promise<Readable> {
    checkKey(key)
    const range = options.range === undefined ? undefined : checkRange(options.range)
    const { signal } = options
    throwIfAborted(signal)
    const what = this.what('get', key)
    const file = (await this.find(key, signal, 'get'))[0]
    if (file === undefined) {
      await this.checkFolder(signal)
      throw new CloudPilotError('OBJECT_NOT_FOUND', `${what}: no such object`)
    }
    const size = Number(file.size ?? 0)
    if (range !== undefined && range.start >= size) return Readable.from([])
    const headers: Record<string, string> = range === undefined ? {} : { range: rangeHeader(range) }
    let response = await this.api.call({
      method: 'GET',
      path: `drive/v3/files/${encodeURIComponent(file.id)}`,
      query: { alt: 'media', supportsAllDrives: 'true' },
      headers,
      signal,
      accept: [302, 303, 307],
      what,
      idempotent: true,
    })
    if (response.status === 302 || response.status === 303 || response.status === 307) {
      // Content served from elsewhere: follow once, through the SSRF guard, without the token.
      await response.body?.cancel()
      const location = response.headers.get('location')
      if (location === null) throw new CloudPilotError('UPLOAD_FAILED', `${what}: a redirect without Location`, { retryable: true })
      const target = new URL(location, this.api.origin)
      if (target.protocol !== 'https:' && target.origin !== this.api.origin) throw new CloudPilotError('UPLOAD_FAILED', `${what}: the download was redirected to a plain-http URL`, { retryable: false })
      response = await this.api.call({ method: 'GET', path: target, headers, signal, anonymous: true, what, idempotent: true })
    }
    if (response.body === null) return Readable.from([])
    const body = Readable.fromWeb(response.body as WebReadableStream<Uint8Array>)
    const exact = range === undefined ? body : exactRange(body, range, response, size)
    return downloadStream(exact, (err) => mapTransportError(err, { what, endpoint: this.api.origin, secrets: [], signal }), signal)
  }

  async stat (key: string, options: CallOptions = {}): Promise<ObjectInfo | null> {
    checkKey(key)
    const { signal } = options
    throwIfAborted(signal)
    const file = (await this.find(key, signal, 'stat'))[0]
    if (file === undefined) {
      await this.checkFolder(signal)
      return null
    }
    return { key, sizeBytes: Number(file.size ?? 0), modifiedAt: new Date(file.modifiedTime ?? 0) }
  }

  async delete (key: string, options: CallOptions = {}): Promise<void> {
    checkKey(key)
    const { signal } = options
    throwIfAborted(signal)
    const files = await this.find(key, signal, 'delete')
    if (files.length === 0) {
      // Deleting from a folder that is gone must not look like success to retention.
      await this.checkFolder(signal)
      return
    }
    for (const file of files) {
      const response = await this.api.call({ method: 'DELETE', path: `drive/v3/files/${encodeURIComponent(file.id)}`, query: { supportsAllDrives: 'true' }, signal, accept: [404], what: this.what('delete', key), idempotent: true })
      await response.body?.cancel()
    }
  }

  async list (prefix: string, options: ListOptions = {}): Promise<ListPage> {
    const { signal } = options
    throwIfAborted(signal)
    if (typeof prefix !== 'string' || prefix.includes('\0')) throw new CloudPilotError('VALIDATION_FAILED', 'list prefix contains a NUL character')
    const limit = Math.min(Math.max(Math.trunc(options.limit ?? 1000), 1), 10_000)
    const after = options.cursor ?? ''
    await this.checkFolder(signal)
    const files = await this.query('', signal, this.what('list'))
    const newest = new Map<string, DriveFile>()
    for (const file of files.sort(newestFirst)) {
      if (file.name.startsWith(prefix) && file.name > after && !newest.has(file.name)) newest.set(file.name, file)
    }
    const keys = [...newest.keys()].sort((a, b) => a < b ? -1 : a > b ? 1 : 0)
    const items = keys.slice(0, limit).map((k) => {
      const f = newest.get(k) as DriveFile
      return { key: k, sizeBytes: Number(f.size ?? 0), modifiedAt: new Date(f.modifiedTime ?? 0) }
    })
    return { items, nextCursor: keys.length > limit ? (items.at(-1)?.key ?? null) : null }
  }

  async test (options: CallOptions = {}): Promise<TestResult> {
    await this.checkFolder(options.signal, true)
    return await probeRoundTrip(this, options)
  }

  async close (): Promise<void> {}
}

function newestFirst (a: DriveFile, b: DriveFile): number {
  const ta = Date.parse(a.modifiedTime ?? '') || 0
  const tb = Date.parse(b.modifiedTime ?? '') || 0
  return tb - ta || (a.id < b.id ? 1 : -1)
}

/** The bytes a 308 says the session holds: `Range: bytes=0-N` → N + 1 (no Range: none yet). */
function persistedOf (response: Response): number {
  const m = /^bytes=0-(\d+)$/.exec(response.headers.get('range') ?? '')
  return m?.[1] === undefined ? 0 : Number(m[1]) + 1
}

/** The requested range exactly, whatever the API answered (a 200 with the whole file, or a 206). */
function exactRange (body: Readable, range: ByteRange, response: Response, size: number): Readable {
  const answered = parseContentRange(response.headers.get('content-range') ?? undefined) ?? { start: 0, end: size - 1, total: size }
  const wantedEnd = Math.min(range.end ?? Number.MAX_SAFE_INTEGER, (answered.total ?? size) - 1)
  if (answered.start === range.start && answered.end === wantedEnd) return body
  if (answered.start > range.start || answered.end < wantedEnd) {
    body.destroy()
    throw new CloudPilotError('UPLOAD_FAILED', `asked for ${rangeHeader(range)}, the API answered bytes ${answered.start}-${answered.end}`, { retryable: transientStatus(500) })
  }
  return sliceStream(body, range.start - answered.start, wantedEnd - range.start + 1)
}
