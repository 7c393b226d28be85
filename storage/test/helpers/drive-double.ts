/**
 * A loopback Google Drive v3 server (no Drive emulator exists), implementing the documented calls the
 * google_drive driver makes (https://developers.google.com/drive/api/reference/rest/v3,
 * .../drive/api/guides/manage-uploads):
 *
 * - POST /token: Google's OAuth token endpoint (helpers/google-oauth-double.ts); every API call needs a bearer
 *   token (401 with reason authError otherwise). Requests to a resumable session URI need none.
 * - GET /drive/v3/files?q=…&fields=…&pageSize&pageToken: the query language's `'<id>' in parents`,
 *   `trashed = true|false`, `name = '…'`, `name contains '…'`, `mimeType [!]= '…'` joined by `and`, string
 *   literals with \' and \\ escapes (anything else: 400 invalid). Results in no particular order (newest first
 *   here), `nextPageToken` while more remain, partial responses per `fields=files(a,b)`. A parent the caller
 *   cannot see gives an empty list.
 * - GET /drive/v3/files/{id}: metadata; `?alt=media`: the bytes, Range → 206 + Content-Range, a start past the
 *   end → 416. A file the caller cannot see is 404 "File not found: {id}." (Drive hides unshared files).
 *   With `redirectDownloads`, alt=media answers 302 to a content URL that takes no token (as Drive may).
 * - DELETE /drive/v3/files/{id}: 204; 404 as above; 403 insufficientFilePermissions for a reader.
 * - POST /upload/drive/v3/files?uploadType=resumable (JSON metadata with name and parents) and
 *   PATCH /upload/drive/v3/files/{id}?uploadType=resumable (a new revision): 200 + `Location`, the session URI.
 *   The parent must be a folder the caller may write (404 File not found: {parent}. / 403
 *   insufficientFilePermissions); a service account writing outside a shared drive gets 403
 *   storageQuotaExceeded when `serviceAccountsHaveNoQuota` (Drive's behaviour since 2024).
 *   PUT to the session with `Content-Range: bytes a-b/{total|*}` appends (non-final chunks: multiples of 256 KiB)
 *   and answers 308 with `Range: bytes=0-n` until the last byte; then the file is created (or its content
 *   replaced) and the answer is 200 with the file. "bytes *" over the total asks for the status.
 * - POST /upload/drive/v3/files?uploadType=multipart|media: one-request uploads.
 *
 * Not implemented: shared drives as such (a folder may be marked as in one), permissions API, changes, export of
 * Google Docs formats, revisions API, trash/untrash, copy.
 */
import { createHash, randomBytes } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { sendJson, startDoubleServer, type DoubleServer } from './double-server.ts'
import { createOAuthDouble, type OAuthDouble } from './google-oauth-double.ts'

const FOLDER = 'application/vnd.google-apps.folder'
const CHUNK_MULTIPLE = 256 * 1024

export interface DriveFileRecord {
  id: string
  name: string
  parents: string[]
  mimeType: string
  data: Buffer
  createdTime: Date
  modifiedTime: Date
  trashed: boolean
  appProperties: Record<string, string>
}

interface FolderAccess { writers: Set<string>, readers: Set<string>, inSharedDrive: boolean }

interface UploadSession {
  fileId: string | undefined
  name: string
  parents: string[]
  mimeType: string
  appProperties: Record<string, string>
  parts: Buffer[]
  received: number
  result: DriveFileRecord | undefined
}

export interface DriveDouble {
  server: DoubleServer
  /** `<origin>/` (the driver's rootUrl) */
  rootUrl: string
  tokenUri: string
  oauth: OAuthDouble
  files: Map<string, DriveFileRecord>
  sessions: Map<string, UploadSession>
  /** Makes a folder; `writers`/`readers` are principals (client emails / OAuth client ids). */
  folder: (name: string, access: { writers?: string[], readers?: string[], inSharedDrive?: boolean }) => string
  /** Service accounts get 403 storageQuotaExceeded for uploads outside shared drives. */
  serviceAccountsHaveNoQuota: boolean
  /** Answer alt=media with 302 to a content URL (served without a token), as Drive may. */
  redirectDownloads: boolean
  /** Files (not folders) in a folder, trashed or not. */
  filesIn: (folderId: string) => DriveFileRecord[]
  openSessions: () => number
  close: () => Promise<void>
}

function driveError (res: ServerResponse, code: number, message: string, reason: string, extra: Record<string, string> = {}): void {
  sendJson(res, code, { error: { code, message, errors: [{ message, domain: 'global', reason, ...extra }] } })
}

interface Term { field: string, op: string, value: string | boolean }

/** Parses the subset of the Drive query language described above; throws on anything else. */
function parseQuery (q: string): Term[] {
  const terms: Term[] = []
  let i = 0
  const skip = (): void => { while (q[i] === ' ') i++ }
  const literal = (): string => {
    if (q[i] !== "'") throw new Error(`expected a string at ${i}`)
    i++
    let out = ''
    while (i < q.length && q[i] !== "'") {
      if (q[i] === '\\') { i++; out += q[i] ?? ''; i++; continue }
      out += q[i]
      i++
    }
    if (q[i] !== "'") throw new Error('unterminated string')
    i++
    return out
  }
  const word = (): string => {
    const m = /^[A-Za-z!=<>]+/.exec(q.slice(i))
    if (m === null) throw new Error(`unexpected ${q.slice(i, i + 10)}`)
    i += m[0].length
    return m[0]
  }
  for (;;) {
    skip()
    if (q[i] === "'") {
      const value = literal()
      skip()
      if (word() !== 'in') throw new Error('expected in')
      skip()
      if (word() !== 'parents') throw new Error('expected parents')
      terms.push({ field: 'parents', op: 'in', value })
    } else {
      const field = word()
      skip()
      const op = word()
      skip()
      if (field === 'trashed' && op === '=') {
        const v = word()
        if (v !== 'true' && v !== 'false') throw new Error('trashed must be true or false')
        terms.push({ field, op, value: v === 'true' })
      } else if ((field === 'name' && (op === '=' || op === 'contains' || op === '!=')) || (field === 'mimeType' && (op === '=' || op === '!='))) {
        skip()
        terms.push({ field, op, value: literal() })
      } else {
        throw new Error(`unsupported term ${field} ${op}`)
      }
    }
    skip()
    if (i >= q.length) return terms
    if (word() !== 'and') throw new Error('only "and" is supported')
  }
}

function matches (file: DriveFileRecord, terms: Term[]): boolean {
  return terms.every((t) => {
    if (t.field === 'parents') return file.parents.includes(t.value as string)
    if (t.field === 'trashed') return file.trashed === t.value
    if (t.field === 'name' && t.op === '=') return file.name === t.value
    if (t.field === 'name' && t.op === '!=') return file.name !== t.value
    // "contains" matches name prefixes of words, as Drive documents it.
    if (t.field === 'name' && t.op === 'contains') return file.name.split(/[\s/._-]+/).some((w) => w.startsWith(t.value as string)) || file.name.startsWith(t.value as string)
    if (t.field === 'mimeType') return t.op === '=' ? file.mimeType === t.value : file.mimeType !== t.value
    return false
  })
}

function pick (file: DriveFileRecord, fields: string[] | undefined): Record<string, unknown> {
  const all: Record<string, unknown> = {
    kind: 'drive#file',
    id: file.id,
    name: file.name,
    mimeType: file.mimeType,
    parents: file.parents,
    trashed: file.trashed,
    createdTime: file.createdTime.toISOString(),
    modifiedTime: file.modifiedTime.toISOString(),
    ...(file.mimeType === FOLDER ? {} : { size: String(file.data.length), md5Checksum: createHash('md5').update(file.data).digest('hex') }),
    ...(Object.keys(file.appProperties).length === 0 ? {} : { appProperties: file.appProperties }),
  }
  if (fields === undefined) return { kind: all.kind, id: all.id, name: all.name, mimeType: all.mimeType }
  return Object.fromEntries(fields.filter((f) => f in all).map((f) => [f, all[f]]))
}

/** `fields=nextPageToken,files(id,name)` → ['id', 'name'] for files; undefined means Drive's default set. */
function fileFields (fields: string | null, inList: boolean): string[] | undefined {
  if (fields === null) return undefined
  if (fields === '*') return ['kind', 'id', 'name', 'mimeType', 'parents', 'trashed', 'createdTime', 'modifiedTime', 'size', 'md5Checksum', 'appProperties']
  if (inList) {
    const m = /files\(([^)]*)\)/.exec(fields)
    return m?.[1] === undefined ? undefined : m[1].split(',').map((f) => f.trim())
  }
  return fields.split(',').map((f) => f.trim())
}

export async function startDriveDouble (options: { tls?: { key: Buffer, cert: Buffer } } = {}): Promise<DriveDouble> {
  const oauth = createOAuthDouble()
  const files = new Map<string, DriveFileRecord>()
  const access = new Map<string, FolderAccess>()
  const sessions = new Map<string, UploadSession>()
  const newId = (): string => randomBytes(21).toString('base64url').slice(0, 28)

  const canSee = (principal: string, file: DriveFileRecord): boolean => {
    const folder = file.mimeType === FOLDER ? access.get(file.id) : access.get(file.parents[0] ?? '')
    return folder !== undefined && (folder.writers.has(principal) || folder.readers.has(principal))
  }
  const canWrite = (principal: string, folderId: string): boolean => access.get(folderId)?.writers.has(principal) === true

  const finish = (session: UploadSession): DriveFileRecord => {
    const data = Buffer.concat(session.parts, session.received)
    const now = new Date()
    let file = session.fileId === undefined ? undefined : files.get(session.fileId)
    if (file === undefined) {
      file = { id: newId(), name: session.name, parents: session.parents, mimeType: session.mimeType, data, createdTime: now, modifiedTime: now, trashed: false, appProperties: session.appProperties }
      files.set(file.id, file)
    } else {
      file.data = data
      file.mimeType = session.mimeType
      file.modifiedTime = now
      file.appProperties = { ...file.appProperties, ...session.appProperties }
    }
    session.result = file
    session.parts = []
    return file
  }

  const handleSession = (req: IncomingMessage, res: ServerResponse, id: string, body: Buffer): void => {
    const session = sessions.get(id)
    if (session === undefined) { driveError(res, 404, 'Upload session not found or expired.', 'notFound'); return }
    if (session.result !== undefined) { sendJson(res, 200, pick(session.result, ['kind', 'id', 'name', 'mimeType', 'size', 'modifiedTime'])); return }
    const progress = (): void => {
      const headers: Record<string, string> = { 'content-length': '0' }
      if (session.received > 0) headers.range = `bytes=0-${session.received - 1}`
      res.writeHead(308, headers)
      res.end()
    }
    const done = (): void => { sendJson(res, 200, pick(finish(session), ['kind', 'id', 'name', 'mimeType', 'size', 'modifiedTime'])) }
    const header = String(req.headers['content-range'] ?? '')
    const status = /^bytes \*\/(\d+|\*)$/.exec(header)
    if (status !== null) {
      if (body.length !== 0) { driveError(res, 400, 'A status request has no body.', 'badRequest'); return }
      if (status[1] !== '*' && Number(status[1]) === session.received) { done(); return }
      progress()
      return
    }
    const chunk = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(header)
    if (chunk === null) { driveError(res, 400, `Invalid Content-Range: ${header}`, 'badContentRange'); return }
    const first = Number(chunk[1])
    const last = Number(chunk[2])
    const total = chunk[3] === '*' ? undefined : Number(chunk[3])
    if (last - first + 1 !== body.length) { driveError(res, 400, 'Content-Range does not match the body.', 'badContentRange'); return }
    if (first > session.received) { driveError(res, 400, `The chunk starts at ${first}; the session holds ${session.received} bytes.`, 'badContentRange'); return }
    const isFinal = total !== undefined && last + 1 === total
    if (!isFinal && body.length % CHUNK_MULTIPLE !== 0) { driveError(res, 400, 'Chunk size must be a multiple of 256 KiB except for the last chunk.', 'badContentRange'); return }
    const fresh = body.subarray(session.received - first)
    session.parts.push(Buffer.from(fresh))
    session.received += fresh.length
    if (total !== undefined && session.received === total) { done(); return }
    progress()
  }

  const handle = (req: IncomingMessage, res: ServerResponse, body: Buffer, url: URL): void => {
    const path = url.pathname
    const q = url.searchParams
    if (path === '/token') { oauth.handle(req, res, body, double.tokenUri); return }

    const uploadId = q.get('upload_id')
    if (path === '/upload/drive/v3/files' && uploadId !== null) {
      if (req.method !== 'PUT' && req.method !== 'POST') { driveError(res, 405, 'Method not allowed', 'methodNotAllowed'); return }
      handleSession(req, res, uploadId, body)
      return
    }

    const content = /^\/content\/([^/]+)$/.exec(path)
    if (content?.[1] !== undefined && req.method === 'GET') {
      if (req.headers.authorization !== undefined) { driveError(res, 400, 'The content host takes no Authorization header.', 'badRequest'); return }
      const file = files.get(decodeURIComponent(content[1]))
      if (file === undefined) { driveError(res, 404, 'Not found', 'notFound'); return }
      sendMedia(req, res, file)
      return
    }

    const principal = oauth.principalOf(req.headers.authorization)
    if (principal === undefined) {
      sendJson(res, 401, { error: { code: 401, message: 'Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.', errors: [{ message: 'Invalid Credentials', domain: 'global', reason: 'authError', location: 'Authorization', locationType: 'header' }], status: 'UNAUTHENTICATED' } })
      return
    }
    const isServiceAccount = principal.endsWith('.iam.gserviceaccount.com')

    const upload = /^\/upload\/drive\/v3\/files(?:\/([^/]+))?$/.exec(path)
    if (upload !== null) {
      const type = q.get('uploadType')
      const fileId = upload[1] === undefined ? undefined : decodeURIComponent(upload[1])
      let meta: { name?: string, parents?: string[], mimeType?: string, appProperties?: Record<string, string> } = {}
      let media: Buffer | undefined
      if (type === 'multipart') {
        const boundary = /boundary="?([^";]+)"?/.exec(String(req.headers['content-type'] ?? ''))?.[1] ?? ''
        const parts = body.toString('latin1').split(`--${boundary}`).slice(1, -1).map((p) => Buffer.from(p, 'latin1'))
        const metaPart = parts[0]?.toString() ?? ''
        meta = JSON.parse(metaPart.slice(metaPart.indexOf('\r\n\r\n') + 4)) as typeof meta
        const mediaPart = parts[1] ?? Buffer.alloc(0)
        media = mediaPart.subarray(mediaPart.indexOf('\r\n\r\n') + 4, mediaPart.length - 2)
      } else if (type === 'media') {
        media = body
      } else if (type === 'resumable') {
        if (body.length > 0) {
          try { meta = JSON.parse(body.toString()) as typeof meta } catch { driveError(res, 400, 'Invalid JSON payload received.', 'parseError'); return }
        }
      } else {
        driveError(res, 400, `Invalid value for uploadType: ${type ?? ''}`, 'invalid', { location: 'uploadType', locationType: 'parameter' }); return
      }
      let existing: DriveFileRecord | undefined
      let parents: string[]
      if (fileId !== undefined) {
        if (req.method !== 'PATCH') { driveError(res, 405, 'Method not allowed', 'methodNotAllowed'); return }
        existing = files.get(fileId)
        if (existing === undefined || existing.trashed || !canSee(principal, existing)) { driveError(res, 404, `File not found: ${fileId}.`, 'notFound', { location: 'fileId', locationType: 'parameter' }); return }
        parents = existing.parents
      } else {
        if (req.method !== 'POST') { driveError(res, 405, 'Method not allowed', 'methodNotAllowed'); return }
        parents = meta.parents ?? ['root']
      }
      const parent = parents[0] ?? 'root'
      const folder = files.get(parent)
      if (folder === undefined || folder.mimeType !== FOLDER || folder.trashed || !canSee(principal, folder)) { driveError(res, 404, `File not found: ${parent}.`, 'notFound', { location: 'fileId', locationType: 'parameter' }); return }
      if (!canWrite(principal, parent)) { driveError(res, 403, 'The user does not have sufficient permissions for this file.', 'insufficientFilePermissions'); return }
      if (isServiceAccount && double.serviceAccountsHaveNoQuota && access.get(parent)?.inSharedDrive !== true) {
        driveError(res, 403, 'Service Accounts do not have storage quota. Leverage shared drives (https://developers.google.com/workspace/drive/api/guides/about-shareddrives), or use OAuth delegation (http://support.google.com/a/answer/7281227) instead.', 'storageQuotaExceeded')
        return
      }
      const session: UploadSession = {
        fileId: existing?.id,
        name: meta.name ?? existing?.name ?? 'Untitled',
        parents,
        mimeType: meta.mimeType ?? String(req.headers['x-upload-content-type'] ?? existing?.mimeType ?? 'application/octet-stream'),
        appProperties: meta.appProperties ?? {},
        parts: [],
        received: 0,
        result: undefined,
      }
      if (media !== undefined) {
        session.parts = [media]
        session.received = media.length
        sendJson(res, 200, pick(finish(session), fileFields(q.get('fields'), false)))
        return
      }
      const id = `AJ${randomBytes(24).toString('base64url')}`
      sessions.set(id, session)
      res.writeHead(200, { location: `${double.server.origin}/upload/drive/v3/files?uploadType=resumable&upload_id=${id}`, 'x-guploader-uploadid': id, 'content-length': '0' })
      res.end()
      return
    }

    if (path === '/drive/v3/files' && req.method === 'GET') {
      let terms: Term[]
      try {
        terms = parseQuery(q.get('q') ?? '')
      } catch (err) {
        driveError(res, 400, `Invalid Value: ${(err as Error).message}`, 'invalid', { location: 'q', locationType: 'parameter' }); return
      }
      const pageSize = Math.min(Math.max(Number(q.get('pageSize') ?? 100) || 100, 1), 1000)
      const start = Number(q.get('pageToken') ?? 0) || 0
      const found = [...files.values()]
        .filter((f) => canSee(principal, f) && matches(f, terms))
        .sort((a, b) => b.createdTime.getTime() - a.createdTime.getTime() || (a.id < b.id ? 1 : -1))
      const page = found.slice(start, start + pageSize)
      const fields = fileFields(q.get('fields'), true)
      sendJson(res, 200, {
        kind: 'drive#fileList',
        incompleteSearch: false,
        files: page.map((f) => pick(f, fields)),
        ...(start + pageSize < found.length ? { nextPageToken: String(start + pageSize) } : {}),
      })
      return
    }

    const one = /^\/drive\/v3\/files\/([^/]+)$/.exec(path)
    if (one?.[1] !== undefined) {
      const id = decodeURIComponent(one[1])
      const file = files.get(id)
      if (file === undefined || !canSee(principal, file)) { driveError(res, 404, `File not found: ${id}.`, 'notFound', { location: 'fileId', locationType: 'parameter' }); return }
      if (req.method === 'DELETE') {
        const folderId = file.mimeType === FOLDER ? file.id : file.parents[0] ?? ''
        if (!canWrite(principal, folderId)) { driveError(res, 403, 'The user does not have sufficient permissions for this file.', 'insufficientFilePermissions'); return }
        files.delete(id)
        res.writeHead(204)
        res.end()
        return
      }
      if (req.method !== 'GET') { driveError(res, 405, 'Method not allowed', 'methodNotAllowed'); return }
      if (q.get('alt') !== 'media') { sendJson(res, 200, pick(file, fileFields(q.get('fields'), false))); return }
      if (file.mimeType === FOLDER) { driveError(res, 403, 'Only files with binary content can be downloaded. Use Export with Docs Editors files.', 'fileNotDownloadable'); return }
      if (double.redirectDownloads) {
        res.writeHead(302, { location: `${double.server.origin}/content/${encodeURIComponent(file.id)}`, 'content-length': '0' })
        res.end()
        return
      }
      sendMedia(req, res, file)
      return
    }
    driveError(res, 404, `Not Found: ${req.method ?? ''} ${path}`, 'notFound')
  }

  const sendMedia = (req: IncomingMessage, res: ServerResponse, file: DriveFileRecord): void => {
    const size = file.data.length
    const range = /^bytes=(\d+)-(\d*)$/.exec(String(req.headers.range ?? ''))
    if (range?.[1] !== undefined) {
      const from = Number(range[1])
      const to = range[2] === '' || range[2] === undefined ? size - 1 : Math.min(Number(range[2]), size - 1)
      if (from >= size) { driveError(res, 416, 'Request range not satisfiable', 'requestedRangeNotSatisfiable'); return }
      res.writeHead(206, { 'content-type': file.mimeType, 'content-length': String(to - from + 1), 'content-range': `bytes ${from}-${to}/${size}`, 'accept-ranges': 'bytes' })
      res.end(file.data.subarray(from, to + 1))
      return
    }
    res.writeHead(200, { 'content-type': file.mimeType, 'content-length': String(size), 'accept-ranges': 'bytes' })
    res.end(file.data)
  }

  const server = await startDoubleServer(handle, options)
  const double: DriveDouble = {
    server,
    rootUrl: `${server.origin}/`,
    tokenUri: `${server.origin}/token`,
    oauth,
    files,
    sessions,
    serviceAccountsHaveNoQuota: false,
    redirectDownloads: false,
    folder: (name, grants) => {
      const id = newId()
      const now = new Date()
      files.set(id, { id, name, parents: ['root'], mimeType: FOLDER, data: Buffer.alloc(0), createdTime: now, modifiedTime: now, trashed: false, appProperties: {} })
      access.set(id, { writers: new Set(grants.writers ?? []), readers: new Set(grants.readers ?? []), inSharedDrive: grants.inSharedDrive ?? true })
      return id
    },
    filesIn: (folderId) => [...files.values()].filter((f) => f.parents.includes(folderId) && f.mimeType !== FOLDER),
    openSessions: () => [...sessions.values()].filter((s) => s.result === undefined).length,
    close: async () => { await server.close() },
  }
  return double
}
