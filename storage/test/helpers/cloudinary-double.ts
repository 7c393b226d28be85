/**
 * A loopback Cloudinary (no emulator exists), implementing the documented REST calls the cloudinary driver makes:
 *
 * - Upload API, POST /v1_1/{cloud}/raw/upload (multipart/form-data): signed requests
 *   (cloudinary.com/documentation/authentication_signatures: SHA-1 of the sorted parameters but file, cloud_name,
 *   resource_type and api_key, then the secret), refused as 401 "Invalid Signature …" / "Unknown API key …", a
 *   timestamp older than an hour as 400 "Stale request …". Chunked uploads (…/upload_images#chunked_asset_upload):
 *   `X-Unique-Upload-Id` groups the chunks, `Content-Range: bytes a-b/total` with -1 as total until the last
 *   chunk (as the SDKs send it); chunks but the last must be at least 5 MB; a chunk sent again is accepted.
 *   The asset exists (or is replaced, `overwrite`) only when the last chunk arrives; the answer is then the full
 *   upload response (public_id, version, bytes, created_at, type, resource_type, secure_url…). The answer to an
 *   earlier chunk is not documented; here it is {done: false, bytes}. An empty file is 400 "Empty file"; a file
 *   over `maxFileSize` is 400 "File size too large. Got N. Maximum is M.".
 * - POST /v1_1/{cloud}/raw/destroy (signed): {result: "ok"} or {result: "not found"}.
 * - Admin API (HTTP Basic api_key:api_secret): GET /v1_1/{cloud}/resources/raw/{type}?prefix&max_results
 *   (≤ 500)&next_cursor, newest first, `next_cursor` while more remain; GET …/resources/raw/{type}/{public_id}:
 *   details, or 404 {error: {message: "Resource not found - …"}}.
 * - Delivery: GET /{cloud}/raw/authenticated/s--{signature}--/v{version}/{public_id} with the signature of
 *   signed delivery URLs (first 8 characters of the URL-safe base64 SHA-1 of public_id + secret); a wrong
 *   signature is 401 and a missing asset 404, each with an `X-Cld-Error` header; Range → 206.
 * - An unknown cloud name: 401 {error: {message: "Invalid cloud_name …"}} on every API.
 *
 * Not implemented: image/video processing, transformations, upload presets (unsigned uploads), eager/async
 * options, tags, contexts, structured metadata, backups, moderation, search API, auth tokens (token-based access).
 */
import { createHash } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { apiSignature } from '../../src/cloudinary-signature.ts'
import { sendJson, startDoubleServer, type DoubleServer } from './double-server.ts'

const MIN_CHUNK = 5 * 1000 * 1000

export interface CloudinaryAsset { publicId: string, type: string, data: Buffer, version: number, createdAt: Date }

interface PendingUpload { publicId: string, type: string, parts: Buffer[], received: number }

export interface CloudinaryDouble {
  server: DoubleServer
  apiUrl: string
  deliveryUrl: string
  cloudName: string
  apiKey: string
  apiSecret: string
  assets: Map<string, CloudinaryAsset>
  /** Chunked uploads that never got their last chunk. */
  pending: Map<string, PendingUpload>
  maxFileSize: number
  close: () => Promise<void>
}

function cldError (res: ServerResponse, status: number, message: string): void {
  sendJson(res, status, { error: { message } }, { 'x-cld-error': message })
}

/** multipart/form-data fields (strings) and the `file` part (bytes). */
function parseForm (req: IncomingMessage, body: Buffer): { fields: Record<string, string>, file: Buffer | undefined } | undefined {
  const boundary = /boundary=([^;]+)/.exec(String(req.headers['content-type'] ?? ''))?.[1]?.replace(/^"|"$/g, '')
  if (boundary === undefined) return undefined
  const delimiter = Buffer.from(`--${boundary}`)
  const fields: Record<string, string> = {}
  let file: Buffer | undefined
  let at = body.indexOf(delimiter)
  while (at !== -1) {
    const next = body.indexOf(delimiter, at + delimiter.length)
    if (next === -1) break
    const part = body.subarray(at + delimiter.length + 2, next - 2)
    const split = part.indexOf('\r\n\r\n')
    const head = part.subarray(0, split).toString()
    const content = part.subarray(split + 4)
    const name = /name="([^"]+)"/.exec(head)?.[1]
    if (name === 'file') file = Buffer.from(content)
    else if (name !== undefined) fields[name] = content.toString('utf8')
    at = next
  }
  return { fields, file }
}

export async function startCloudinaryDouble (options: { tls?: { key: Buffer, cert: Buffer }, cloudName?: string } = {}): Promise<CloudinaryDouble> {
  const assets = new Map<string, CloudinaryAsset>()
  const pending = new Map<string, PendingUpload>()
  let version = 1_700_000_000

  const uploadResponse = (asset: CloudinaryAsset): Record<string, unknown> => ({
    asset_id: createHash('md5').update(`${asset.publicId}/${asset.version}`).digest('hex'),
    public_id: asset.publicId,
    version: asset.version,
    version_id: createHash('md5').update(String(asset.version)).digest('hex'),
    signature: createHash('sha1').update(asset.publicId + String(asset.version)).digest('hex'),
    resource_type: 'raw',
    created_at: asset.createdAt.toISOString().replace(/\.\d{3}Z$/, 'Z'),
    tags: [],
    bytes: asset.data.length,
    type: asset.type,
    etag: createHash('md5').update(asset.data).digest('hex'),
    placeholder: false,
    url: `${double.deliveryUrl}/${double.cloudName}/raw/${asset.type}/v${asset.version}/${asset.publicId}`,
    secure_url: `${double.deliveryUrl}/${double.cloudName}/raw/${asset.type}/v${asset.version}/${asset.publicId}`,
    original_filename: 'blob',
  })

  /** Checks api_key, timestamp and signature of an Upload API request; answers and returns false when refused. */
  const checkSigned = (res: ServerResponse, fields: Record<string, string>): boolean => {
    if (fields.api_key !== double.apiKey) { cldError(res, 401, `Unknown API key ${fields.api_key ?? ''}`); return false }
    const expected = apiSignature(fields, double.apiSecret)
    if (fields.signature !== expected) {
      const toSign = Object.keys(fields).filter((k) => !['file', 'cloud_name', 'resource_type', 'api_key', 'signature'].includes(k)).sort().map((k) => `${k}=${fields[k] ?? ''}`).join('&')
      cldError(res, 401, `Invalid Signature ${fields.signature ?? ''}. String to sign - '${toSign}'.`)
      return false
    }
    const timestamp = Number(fields.timestamp)
    if (!Number.isFinite(timestamp) || Date.now() / 1000 - timestamp > 3600) { cldError(res, 400, `Stale request - reported time is ${fields.timestamp ?? ''} which is more than 1 hour ago`); return false }
    return true
  }

  const basicAuth = (req: IncomingMessage, res: ServerResponse): boolean => {
    const m = /^Basic (.+)$/.exec(req.headers.authorization ?? '')
    const [key, secret] = m?.[1] === undefined ? [] : Buffer.from(m[1], 'base64').toString().split(':')
    if (key !== double.apiKey) { cldError(res, 401, `Unknown API key ${key ?? ''}`); return false }
    if (secret !== double.apiSecret) { cldError(res, 401, 'Invalid credentials'); return false }
    return true
  }

  const handle = (req: IncomingMessage, res: ServerResponse, body: Buffer, url: URL): void => {
    const segments = url.pathname.split('/').slice(1)
    if (segments[0] === 'v1_1') {
      const cloud = decodeURIComponent(segments[1] ?? '')
      if (cloud !== double.cloudName) { cldError(res, 401, `Invalid cloud_name ${cloud}`); return }
      const rest = segments.slice(2)
      if (rest[0] === 'raw' && (rest[1] === 'upload' || rest[1] === 'destroy') && req.method === 'POST') {
        const form = parseForm(req, body)
        if (form === undefined) { cldError(res, 400, 'Invalid multipart request'); return }
        if (!checkSigned(res, form.fields)) return
        const publicId = form.fields.public_id ?? ''
        const type = form.fields.type ?? 'upload'
        if (rest[1] === 'destroy') {
          const existed = assets.get(`${type}/${publicId}`) !== undefined
          assets.delete(`${type}/${publicId}`)
          sendJson(res, 200, { result: existed ? 'ok' : 'not found' })
          return
        }
        if (publicId === '' || /[?&#\\%<>+]/.test(publicId) || /^[ /]|[ /]$/.test(publicId)) { cldError(res, 400, `Invalid public_id ${publicId}`); return }
        const file = form.file ?? Buffer.alloc(0)
        const finish = (data: Buffer): void => {
          if (data.length === 0) { cldError(res, 400, 'Empty file'); return }
          if (data.length > double.maxFileSize) { cldError(res, 400, `File size too large. Got ${data.length}. Maximum is ${double.maxFileSize}.`); return }
          if (form.fields.overwrite === 'false' && assets.has(`${type}/${publicId}`)) { sendJson(res, 200, { ...uploadResponse(assets.get(`${type}/${publicId}`) as CloudinaryAsset), existing: true }); return }
          const asset: CloudinaryAsset = { publicId, type, data, version: ++version, createdAt: new Date() }
          assets.set(`${type}/${publicId}`, asset)
          sendJson(res, 200, uploadResponse(asset))
        }
        const uploadId = req.headers['x-unique-upload-id']
        const range = /^bytes (\d+)-(\d+)\/(-1|\d+)$/.exec(String(req.headers['content-range'] ?? ''))
        if (typeof uploadId !== 'string' || range === null) { finish(file); return }
        const first = Number(range[1])
        const last = Number(range[2])
        const total = Number(range[3])
        if (last - first + 1 !== file.length) { cldError(res, 400, 'Content-Range does not match the file part'); return }
        const upload = pending.get(uploadId) ?? { publicId, type, parts: [], received: 0 }
        if (upload.publicId !== publicId) { cldError(res, 400, 'A chunk of another public_id under the same X-Unique-Upload-Id'); return }
        if (first > upload.received) { cldError(res, 400, `Chunk out of order: expected offset ${upload.received}, got ${first}`); return }
        const isLast = total !== -1
        if (!isLast && file.length < MIN_CHUNK) { cldError(res, 400, 'Chunk size is too small. Minimum chunk size is 5MB'); return }
        const fresh = file.subarray(upload.received - first)
        upload.parts.push(Buffer.from(fresh))
        upload.received += fresh.length
        if (!isLast) {
          pending.set(uploadId, upload)
          sendJson(res, 200, { done: false, bytes: upload.received })
          return
        }
        pending.delete(uploadId)
        if (upload.received !== total) { cldError(res, 400, `The total ${total} does not match the ${upload.received} bytes received`); return }
        finish(Buffer.concat(upload.parts, upload.received))
        return
      }
      if (rest[0] === 'resources' && rest[1] === 'raw' && req.method === 'GET') {
        if (!basicAuth(req, res)) return
        const type = rest[2] ?? 'upload'
        if (rest.length > 3) {
          const publicId = rest.slice(3).map(decodeURIComponent).join('/')
          const asset = assets.get(`${type}/${publicId}`)
          if (asset === undefined) { cldError(res, 404, `Resource not found - ${publicId}`); return }
          sendJson(res, 200, { ...uploadResponse(asset), access_mode: 'public', derived: [] })
          return
        }
        const prefix = url.searchParams.get('prefix') ?? ''
        const max = Math.min(Math.max(Number(url.searchParams.get('max_results') ?? 10) || 10, 1), 500)
        const start = Number(url.searchParams.get('next_cursor') ?? 0) || 0
        const all = [...assets.values()].filter((a) => a.type === type && a.publicId.startsWith(prefix)).sort((a, b) => b.version - a.version)
        const page = all.slice(start, start + max)
        sendJson(res, 200, {
          resources: page.map((a) => ({ ...uploadResponse(a), access_mode: 'public' })),
          ...(start + max < all.length ? { next_cursor: String(start + max) } : {}),
        }, { 'x-featureratelimit-limit': '500', 'x-featureratelimit-remaining': '499' })
        return
      }
      cldError(res, 404, `Not found: ${req.method ?? ''} ${url.pathname}`)
      return
    }
    // Delivery: /{cloud}/raw/authenticated/s--SIG--/v{version}/{public_id}
    const m = /^\/([^/]+)\/raw\/([a-z]+)\/(s--[A-Za-z0-9_-]{8}--)\/v(\d+)\/(.+)$/.exec(url.pathname)
    if (m?.[1] === undefined || m[2] === undefined || m[3] === undefined || m[5] === undefined) { res.writeHead(404, { 'x-cld-error': 'Resource not found' }); res.end(); return }
    if (decodeURIComponent(m[1]) !== double.cloudName) { res.writeHead(401, { 'x-cld-error': 'Invalid cloud_name' }); res.end(); return }
    const publicId = decodeURIComponent(m[5])
    const expected = `s--${createHash('sha1').update(publicId + double.apiSecret).digest('base64').slice(0, 8).replace(/\//g, '_').replace(/\+/g, '-')}--`
    if (m[3] !== expected) { res.writeHead(401, { 'x-cld-error': 'Signature mismatch' }); res.end(); return }
    const asset = assets.get(`${m[2]}/${publicId}`)
    if (asset === undefined) { res.writeHead(404, { 'x-cld-error': 'Resource not found' }); res.end(); return }
    const size = asset.data.length
    const range = /^bytes=(\d+)-(\d*)$/.exec(String(req.headers.range ?? ''))
    if (range?.[1] !== undefined) {
      const from = Number(range[1])
      const to = range[2] === '' || range[2] === undefined ? size - 1 : Math.min(Number(range[2]), size - 1)
      if (from >= size) { res.writeHead(416, { 'content-range': `bytes */${size}` }); res.end(); return }
      res.writeHead(206, { 'content-type': 'application/octet-stream', 'content-length': String(to - from + 1), 'content-range': `bytes ${from}-${to}/${size}`, 'accept-ranges': 'bytes' })
      res.end(asset.data.subarray(from, to + 1))
      return
    }
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(size), 'accept-ranges': 'bytes' })
    res.end(asset.data)
  }

  const server = await startDoubleServer(handle, options)
  const double: CloudinaryDouble = {
    server,
    apiUrl: server.origin,
    deliveryUrl: server.origin,
    cloudName: options.cloudName ?? 'cloudpilot-test',
    apiKey: '614335564976464',
    apiSecret: 'double-Secret-aB3dE5gH7jK9mN1pQ3sT5vX',
    assets,
    pending,
    maxFileSize: 100 * 1000 * 1000,
    close: async () => { await server.close() },
  }
  return double
}
