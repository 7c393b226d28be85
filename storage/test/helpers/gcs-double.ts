/**
 * A loopback Google Cloud Storage JSON API server (there is no usable GCS emulator here: see shared/TESTING.md),
 * implementing the documented calls the gcs driver and @google-cloud/storage make:
 *
 * - POST /token: the OAuth token endpoint (helpers/google-oauth-double.ts); every other call but the resumable
 *   session URI needs `Authorization: Bearer <token>` (401 otherwise), and a bucket may deny a principal (403).
 * - POST /upload/storage/v1/b/{bucket}/o?uploadType=resumable[&name=] with JSON metadata: 200 and `Location`, the
 *   session URI (…&upload_id=…). PUT to it with `Content-Range: bytes a-b/{total|*}` appends a chunk (non-final
 *   chunks must be multiples of 256 KiB); until the last byte it answers 308 Resume Incomplete with
 *   `Range: bytes=0-n` of what it persisted; the last chunk (total known and reached) creates the object and
 *   answers 200 with its resource. A Content-Range of "bytes *" over the total asks for the status (308 + Range,
 *   or 200 when done).
 *   DELETE on the session URI cancels it (499). The session URI itself is the credential (no Authorization).
 *   https://cloud.google.com/storage/docs/performing-resumable-uploads
 * - POST …?uploadType=multipart (multipart/related: JSON metadata part + media part) and uploadType=media.
 * - GET /storage/v1/b/{bucket}/o?prefix&delimiter&maxResults&pageToken: names in lexicographic (UTF-8 byte)
 *   order, `nextPageToken` while more remain, `prefixes` with a delimiter.
 * - GET /storage/v1/b/{bucket}/o/{object}: the resource (name, bucket, generation, metageneration, size as a
 *   string, md5Hash and crc32c in base64, contentType, metadata, timeCreated, updated, etag).
 * - GET …/o/{object}?alt=media (also under /download/…): the bytes, `Range` → 206 + Content-Range, a start past
 *   the end → 416; `x-goog-hash: crc32c=…,md5=…` (of the whole object) and `x-goog-generation`.
 * - DELETE …/o/{object}[?ifGenerationMatch=]: 204; 404 when missing; 412 when the generation does not match.
 * - GET /storage/v1/b/{bucket}: bucket resource, 404 when it does not exist.
 * - Errors as the JSON API sends them: {error: {code, message, errors: [{message, domain, reason}]}}.
 *
 * Not implemented (the driver does not use them): ACLs, object versioning, compose/rewrite, XML API, signed URLs,
 * requester pays, customer-supplied encryption keys, retention policies, soft delete.
 */
import { createHash, randomBytes } from 'node:crypto'
import http, { type IncomingMessage, type ServerResponse } from 'node:http'
import https from 'node:https'
import type { AddressInfo } from 'node:net'
import { crc32cBase64 } from './crc32c.ts'
import { createOAuthDouble, type OAuthDouble } from './google-oauth-double.ts'

const CHUNK_MULTIPLE = 256 * 1024

export interface StoredObject {
  data: Buffer
  md5: string
  crc32c: string
  generation: number
  contentType: string
  metadata: Record<string, string>
  timeCreated: Date
  updated: Date
}

interface Session {
  bucket: string
  name: string
  contentType: string
  metadata: Record<string, string>
  parts: Buffer[]
  received: number
  result: StoredObject | undefined
}

export type GcsFault =
  | { status: number, reason?: string, message?: string }
  | { reset: true }
  | { hang: true }
  | { delayMs: number }
  /** Persist only the first 256 KiB of this chunk and answer 308 with that Range (the client must resend). */
  | { persistPartially: true }

export interface GcsDouble {
  /** `http://127.0.0.1:<port>` (https with `tls`) */
  endpoint: string
  /** `<endpoint>/token` */
  tokenUri: string
  oauth: OAuthDouble
  buckets: Map<string, Map<string, StoredObject>>
  /** Principals refused (403) per bucket. */
  denied: Map<string, Set<string>>
  sessions: Map<string, Session>
  /** Sessions cancelled with DELETE. */
  cancelled: Set<string>
  requests: Array<{ method: string, url: string, status: number }>
  fault: ((req: IncomingMessage) => GcsFault | undefined) | undefined
  /** Resumable sessions neither finished nor cancelled. */
  openSessions: () => Array<{ bucket: string, name: string, received: number }>
  close: () => Promise<void>
}

function apiError (res: ServerResponse, code: number, message: string, reason: string): void {
  const body = JSON.stringify({ error: { code, message, errors: [{ message, domain: 'global', reason }] } })
  res.writeHead(code, { 'content-type': 'application/json; charset=UTF-8', 'content-length': Buffer.byteLength(body) })
  res.end(body)
}

function sendJson (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json; charset=UTF-8', 'content-length': Buffer.byteLength(text), ...headers })
  res.end(text)
}

function byteCompare (a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b))
}

export async function startGcsDouble (options: { buckets?: string[], tls?: { key: Buffer, cert: Buffer } } = {}): Promise<GcsDouble> {
  const oauth = createOAuthDouble()
  const buckets = new Map<string, Map<string, StoredObject>>((options.buckets ?? ['backups']).map((b) => [b, new Map()]))
  const sessions = new Map<string, Session>()
  const cancelled = new Set<string>()
  const requests: GcsDouble['requests'] = []
  let generation = 1_700_000_000_000_000

  const resource = (bucket: string, name: string, o: StoredObject): Record<string, unknown> => ({
    kind: 'storage#object',
    id: `${bucket}/${name}/${o.generation}`,
    selfLink: `${double.endpoint}/storage/v1/b/${bucket}/o/${encodeURIComponent(name)}`,
    mediaLink: `${double.endpoint}/download/storage/v1/b/${bucket}/o/${encodeURIComponent(name)}?generation=${o.generation}&alt=media`,
    name,
    bucket,
    generation: String(o.generation),
    metageneration: '1',
    contentType: o.contentType,
    storageClass: 'STANDARD',
    size: String(o.data.length),
    md5Hash: o.md5,
    crc32c: o.crc32c,
    etag: Buffer.from(String(o.generation)).toString('base64'),
    timeCreated: o.timeCreated.toISOString(),
    updated: o.updated.toISOString(),
    ...(Object.keys(o.metadata).length === 0 ? {} : { metadata: o.metadata }),
  })

  const store = (bucket: string, name: string, data: Buffer, contentType: string, metadata: Record<string, string>): StoredObject => {
    const now = new Date()
    const object: StoredObject = { data, md5: createHash('md5').update(data).digest('base64'), crc32c: crc32cBase64(data), generation: ++generation, contentType, metadata, timeCreated: now, updated: now }
    buckets.get(bucket)?.set(name, object)
    return object
  }

  /** The principal of a valid bearer token allowed on the bucket, or an error answer sent (undefined). */
  const authorize = (req: IncomingMessage, res: ServerResponse, bucket: string, permission: string): boolean => {
    const principal = oauth.principalOf(req.headers.authorization)
    if (principal === undefined) {
      if (req.headers.authorization === undefined) apiError(res, 401, `Anonymous caller does not have ${permission} access to the Google Cloud Storage bucket. Permission '${permission}' denied on resource (or it may not exist).`, 'required')
      else apiError(res, 401, 'Invalid Credentials', 'authError')
      return false
    }
    if (double.denied.get(bucket)?.has(principal) === true) {
      apiError(res, 403, `${principal} does not have ${permission} access to the Google Cloud Storage bucket. Permission '${permission}' denied on resource (or it may not exist).`, 'forbidden')
      return false
    }
    return true
  }

  const handleChunk = (req: IncomingMessage, res: ServerResponse, id: string, body: Buffer, fault: GcsFault | undefined): void => {
    const session = sessions.get(id)
    if (session === undefined) { apiError(res, cancelled.has(id) ? 499 : 404, cancelled.has(id) ? 'Client Closed Request' : 'No such upload session.', 'notFound'); return }
    const answerProgress = (): void => {
      const headers: Record<string, string> = { 'content-length': '0' }
      if (session.received > 0) headers.range = `bytes=0-${session.received - 1}`
      res.writeHead(308, headers)
      res.end()
    }
    if (session.result !== undefined) { sendJson(res, 200, resource(session.bucket, session.name, session.result)); return }
    const header = String(req.headers['content-range'] ?? '')
    const status = /^bytes \*\/(\d+|\*)$/.exec(header)
    const chunk = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(header)
    const finish = (): void => {
      session.result = store(session.bucket, session.name, Buffer.concat(session.parts, session.received), session.contentType, session.metadata)
      session.parts = []
      sendJson(res, 200, resource(session.bucket, session.name, session.result))
    }
    if (status !== null) {
      if (body.length !== 0) { apiError(res, 400, 'Content-Range bytes */N must come without a body', 'invalid'); return }
      const total = status[1] === '*' ? undefined : Number(status[1])
      if (total !== undefined && total === session.received) { finish(); return }
      if (total !== undefined && total < session.received) { apiError(res, 400, `The total ${total} is less than the ${session.received} bytes already received`, 'invalid'); return }
      answerProgress()
      return
    }
    // An empty object, as @google-cloud/storage sends it: "bytes 0--1/0".
    if (header === 'bytes 0--1/0' && body.length === 0 && session.received === 0) { finish(); return }
    if (chunk === null) { apiError(res, 400, `Invalid Content-Range: ${header}`, 'invalid'); return }
    const first = Number(chunk[1])
    const last = Number(chunk[2])
    const total = chunk[3] === '*' ? undefined : Number(chunk[3])
    if (last - first + 1 !== body.length) { apiError(res, 400, `Content-Range ${header} does not match the ${body.length} bytes sent`, 'invalid'); return }
    if (first > session.received) { apiError(res, 400, `Invalid request: the chunk starts at ${first} but only ${session.received} bytes were received`, 'invalid'); return }
    const isFinal = total !== undefined && last + 1 === total
    if (!isFinal && body.length % CHUNK_MULTIPLE !== 0) { apiError(res, 400, `Invalid request. The chunk size ${body.length} must be a multiple of 262144 bytes (256 KiB), except for the last chunk`, 'invalid'); return }
    // Bytes already persisted (a resend after a partial persist) are skipped.
    let fresh = body.subarray(session.received - first)
    if (fault !== undefined && 'persistPartially' in fault && fresh.length > CHUNK_MULTIPLE) fresh = fresh.subarray(0, CHUNK_MULTIPLE)
    session.parts.push(Buffer.from(fresh))
    session.received += fresh.length
    if (total !== undefined && session.received > total) { apiError(res, 400, 'More bytes than the announced total', 'invalid'); return }
    if (total !== undefined && session.received === total) { finish(); return }
    answerProgress()
  }

  const handleMedia = (req: IncomingMessage, res: ServerResponse, bucket: string, name: string): void => {
    const object = buckets.get(bucket)?.get(name)
    if (object === undefined) { apiError(res, 404, `No such object: ${bucket}/${name}`, 'notFound'); return }
    const size = object.data.length
    const headers: Record<string, string> = {
      'content-type': object.contentType,
      'x-goog-hash': `crc32c=${object.crc32c},md5=${object.md5}`,
      'x-goog-generation': String(object.generation),
      'x-goog-metageneration': '1',
      'x-goog-stored-content-length': String(size),
      'x-goog-stored-content-encoding': 'identity',
      'accept-ranges': 'bytes',
      etag: Buffer.from(String(object.generation)).toString('base64'),
    }
    const range = /^bytes=(\d*)-(\d*)$/.exec(String(req.headers.range ?? ''))
    if (range !== null && (range[1] !== '' || range[2] !== '')) {
      let start: number
      let end: number
      if (range[1] === '') { start = Math.max(0, size - Number(range[2])); end = size - 1 } else { start = Number(range[1]); end = range[2] === '' ? size - 1 : Math.min(Number(range[2]), size - 1) }
      if (start >= size) {
        const message = 'Request range not satisfiable'
        const body = JSON.stringify({ error: { code: 416, message, errors: [{ message, domain: 'global', reason: 'requestedRangeNotSatisfiable' }] } })
        res.writeHead(416, { 'content-type': 'application/json; charset=UTF-8', 'content-range': `bytes */${size}`, 'content-length': Buffer.byteLength(body) })
        res.end(body)
        return
      }
      res.writeHead(206, { ...headers, 'content-range': `bytes ${start}-${end}/${size}`, 'content-length': String(end - start + 1) })
      res.end(req.method === 'HEAD' ? undefined : object.data.subarray(start, end + 1))
      return
    }
    res.writeHead(200, { ...headers, 'content-length': String(size) })
    res.end(req.method === 'HEAD' ? undefined : object.data)
  }

  const handle = (req: IncomingMessage, res: ServerResponse, body: Buffer, fault: GcsFault | undefined): void => {
    const url = new URL(req.url ?? '/', double.endpoint)
    const path = url.pathname
    const q = url.searchParams
    if (fault !== undefined && 'status' in fault) { apiError(res, fault.status, fault.message ?? `injected ${fault.status}`, fault.reason ?? 'backendError'); return }

    if (path === '/token') { oauth.handle(req, res, body, double.tokenUri); return }

    let m = /^\/upload\/storage\/v1\/b\/([^/]+)\/o$/.exec(path)
    if (m?.[1] !== undefined) {
      const bucket = decodeURIComponent(m[1])
      const uploadId = q.get('upload_id')
      if (uploadId !== null) {
        if (req.method === 'DELETE') {
          if (!sessions.has(uploadId)) { apiError(res, 404, 'No such upload session.', 'notFound'); return }
          sessions.delete(uploadId)
          cancelled.add(uploadId)
          res.writeHead(499, { 'content-length': '0' })
          res.end()
          return
        }
        if (req.method !== 'PUT' && req.method !== 'POST') { apiError(res, 405, 'Method not allowed', 'invalid'); return }
        handleChunk(req, res, uploadId, body, fault)
        return
      }
      if (req.method !== 'POST') { apiError(res, 405, 'Method not allowed', 'invalid'); return }
      if (!buckets.has(bucket)) { apiError(res, 404, 'The specified bucket does not exist.', 'notFound'); return }
      if (!authorize(req, res, bucket, 'storage.objects.create')) return
      const type = q.get('uploadType')
      if (type === 'resumable') {
        let meta: { name?: string, contentType?: string, metadata?: Record<string, string> } = {}
        if (body.length > 0) {
          try { meta = JSON.parse(body.toString()) as typeof meta } catch { apiError(res, 400, 'Parse Error', 'parseError'); return }
        }
        const name = q.get('name') ?? meta.name
        if (name === undefined || name === '') { apiError(res, 400, 'Required', 'required'); return }
        const id = `ADPycd${randomBytes(16).toString('base64url')}`
        sessions.set(id, { bucket, name, contentType: meta.contentType ?? String(req.headers['x-upload-content-type'] ?? 'application/octet-stream'), metadata: meta.metadata ?? {}, parts: [], received: 0, result: undefined })
        const location = `${double.endpoint}/upload/storage/v1/b/${encodeURIComponent(bucket)}/o?uploadType=resumable&name=${encodeURIComponent(name)}&upload_id=${id}`
        res.writeHead(200, { location, 'x-guploader-uploadid': id, 'content-length': '0' })
        res.end()
        return
      }
      if (type === 'media') {
        const name = q.get('name')
        if (name === null || name === '') { apiError(res, 400, 'Required', 'required'); return }
        sendJson(res, 200, resource(bucket, name, store(bucket, name, body, String(req.headers['content-type'] ?? 'application/octet-stream'), {})))
        return
      }
      if (type === 'multipart') {
        const boundary = /boundary="?([^";]+)"?/.exec(String(req.headers['content-type'] ?? ''))?.[1]
        if (boundary === undefined) { apiError(res, 400, 'Missing multipart boundary', 'invalid'); return }
        const parts = splitMultipart(body, boundary)
        const metaPart = parts[0]
        const mediaPart = parts[1]
        if (metaPart === undefined || mediaPart === undefined) { apiError(res, 400, 'A multipart upload needs a metadata part and a media part', 'invalid'); return }
        const meta = JSON.parse(metaPart.body.toString()) as { name?: string, contentType?: string, metadata?: Record<string, string> }
        const name = q.get('name') ?? meta.name
        if (name === undefined || name === '') { apiError(res, 400, 'Required', 'required'); return }
        sendJson(res, 200, resource(bucket, name, store(bucket, name, mediaPart.body, meta.contentType ?? mediaPart.contentType ?? 'application/octet-stream', meta.metadata ?? {})))
        return
      }
      apiError(res, 400, `Invalid upload type: ${type ?? ''}`, 'invalid')
      return
    }

    m = /^\/(?:download\/)?storage\/v1\/b\/([^/]+)\/o\/(.+)$/.exec(path)
    if (m?.[1] !== undefined && m[2] !== undefined) {
      const bucket = decodeURIComponent(m[1])
      const name = decodeURIComponent(m[2])
      const objects = buckets.get(bucket)
      if (objects === undefined) { apiError(res, 404, 'The specified bucket does not exist.', 'notFound'); return }
      if (req.method === 'GET' || req.method === 'HEAD') {
        if (!authorize(req, res, bucket, 'storage.objects.get')) return
        if (q.get('alt') === 'media') { handleMedia(req, res, bucket, name); return }
        const object = objects.get(name)
        if (object === undefined) { apiError(res, 404, `No such object: ${bucket}/${name}`, 'notFound'); return }
        sendJson(res, 200, resource(bucket, name, object))
        return
      }
      if (req.method === 'DELETE') {
        if (!authorize(req, res, bucket, 'storage.objects.delete')) return
        const object = objects.get(name)
        if (object === undefined) { apiError(res, 404, `No such object: ${bucket}/${name}`, 'notFound'); return }
        const wanted = q.get('ifGenerationMatch')
        if (wanted !== null && wanted !== String(object.generation)) { apiError(res, 412, 'At least one of the pre-conditions you specified did not hold.', 'conditionNotMet'); return }
        objects.delete(name)
        res.writeHead(204)
        res.end()
        return
      }
      apiError(res, 405, 'Method not allowed', 'invalid')
      return
    }

    m = /^\/storage\/v1\/b\/([^/]+)\/o$/.exec(path)
    if (m?.[1] !== undefined && req.method === 'GET') {
      const bucket = decodeURIComponent(m[1])
      const objects = buckets.get(bucket)
      if (objects === undefined) { apiError(res, 404, 'The specified bucket does not exist.', 'notFound'); return }
      if (!authorize(req, res, bucket, 'storage.objects.list')) return
      const prefix = q.get('prefix') ?? ''
      const delimiter = q.get('delimiter') ?? ''
      const max = Math.min(Math.max(Number(q.get('maxResults') ?? 1000) || 1000, 1), 1000)
      const after = q.get('pageToken') === null ? undefined : Buffer.from(q.get('pageToken') ?? '', 'base64url').toString()
      const names = [...objects.keys()].filter((n) => n.startsWith(prefix)).sort(byteCompare)
      const entries: Array<{ name: string, prefix?: string }> = []
      const seenPrefixes = new Set<string>()
      for (const name of names) {
        if (delimiter !== '') {
          const cut = name.indexOf(delimiter, prefix.length)
          if (cut !== -1) {
            const p = name.slice(0, cut + delimiter.length)
            if (!seenPrefixes.has(p)) { seenPrefixes.add(p); entries.push({ name: p, prefix: p }) }
            continue
          }
        }
        entries.push({ name })
      }
      const remaining = entries.filter((e) => after === undefined || byteCompare(e.name, after) > 0)
      const page = remaining.slice(0, max)
      const items = page.filter((e) => e.prefix === undefined).map((e) => resource(bucket, e.name, objects.get(e.name) as StoredObject))
      const prefixes = page.filter((e) => e.prefix !== undefined).map((e) => e.prefix as string)
      const last = page.at(-1)
      sendJson(res, 200, {
        kind: 'storage#objects',
        ...(items.length === 0 ? {} : { items }),
        ...(prefixes.length === 0 ? {} : { prefixes }),
        ...(remaining.length > max && last !== undefined ? { nextPageToken: Buffer.from(last.name).toString('base64url') } : {}),
      })
      return
    }

    m = /^\/storage\/v1\/b\/([^/]+)$/.exec(path)
    if (m?.[1] !== undefined && req.method === 'GET') {
      const bucket = decodeURIComponent(m[1])
      if (!buckets.has(bucket)) { apiError(res, 404, 'The specified bucket does not exist.', 'notFound'); return }
      if (!authorize(req, res, bucket, 'storage.buckets.get')) return
      sendJson(res, 200, { kind: 'storage#bucket', id: bucket, name: bucket, location: 'EU', storageClass: 'STANDARD', metageneration: '1' })
      return
    }
    apiError(res, 404, `Not Found: ${req.method ?? ''} ${path}`, 'notFound')
  }

  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const record = { method: req.method ?? '', url: req.url ?? '', status: 0 }
    requests.push(record)
    res.on('finish', () => { record.status = res.statusCode })
    const peek = double.fault?.(req)
    if (peek !== undefined && 'reset' in peek) { req.socket.destroy(); return }
    if (peek !== undefined && 'hang' in peek) { req.resume(); return }
    const parts: Buffer[] = []
    req.on('data', (d: Buffer) => parts.push(d))
    req.on('end', () => {
      const run = (): void => {
        try {
          handle(req, res, Buffer.concat(parts), peek)
        } catch (err) {
          apiError(res, 500, `double failed: ${(err as Error).message}`, 'backendError')
        }
      }
      if (peek !== undefined && 'delayMs' in peek) setTimeout(run, peek.delayMs)
      else run()
    })
  }
  const server = options.tls === undefined ? http.createServer(handler) : https.createServer({ key: options.tls.key, cert: options.tls.cert }, handler)
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  const port = (server.address() as AddressInfo).port
  const endpoint = `${options.tls === undefined ? 'http' : 'https'}://127.0.0.1:${port}`
  const double: GcsDouble = {
    endpoint,
    tokenUri: `${endpoint}/token`,
    oauth,
    buckets,
    denied: new Map(),
    sessions,
    cancelled,
    requests,
    fault: undefined,
    openSessions: () => [...sessions.values()].filter((s) => s.result === undefined).map((s) => ({ bucket: s.bucket, name: s.name, received: s.received })),
    close: async () => {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
  return double
}

/** Parts of a multipart/related body: headers (content type) and bytes. */
function splitMultipart (body: Buffer, boundary: string): Array<{ contentType: string | undefined, body: Buffer }> {
  const delimiter = Buffer.from(`--${boundary}`)
  const parts: Array<{ contentType: string | undefined, body: Buffer }> = []
  let start = body.indexOf(delimiter)
  while (start !== -1) {
    const next = body.indexOf(delimiter, start + delimiter.length)
    if (next === -1) break
    const part = body.subarray(start + delimiter.length, next)
    const headerEnd = part.indexOf('\r\n\r\n')
    if (headerEnd !== -1) {
      const headers = part.subarray(0, headerEnd).toString()
      let content = part.subarray(headerEnd + 4)
      if (content.subarray(-2).toString() === '\r\n') content = content.subarray(0, -2)
      parts.push({ contentType: /content-type:\s*([^\r\n]+)/i.exec(headers)?.[1]?.trim(), body: content })
    }
    start = next
  }
  return parts
}
