/**
 * An in-process S3 server (npm `s3rver`) on 127.0.0.1, port 0, with an empty temp directory and one bucket.
 * Self-contained; shared by storage, agent and coordinator tests:
 *
 *   const s3 = await startS3rver()
 *   t.teardown(() => s3.close())
 *   // destination: { type: 's3', config: { bucket: s3.bucket, region: s3.region, endpoint: s3.endpoint,
 *   //   forcePathStyle: true }, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } }
 *   // open it with { allowPrivateEndpoints: true } (the endpoint is loopback)
 *
 * s3rver checks that the access key id exists but does not verify SigV4 signatures at all (its v4 support is
 * "unimplemented"), so a wrong secret key would be accepted. Requests therefore go through a small front on
 * another loopback port that verifies each request's SigV4 signature (header or presigned query) against the
 * secret and answers 403 SignatureDoesNotMatch / InvalidAccessKeyId like S3 does, then relays to s3rver
 * (`verifySignatures: false` turns the check off). The front can also serve HTTPS (`tls`).
 *
 * Quirks (shared/TESTING.md): the test process needs `--openssl-legacy-provider` (the repo's .taprc passes it)
 * or paginated lists answer 500; AbortMultipartUpload answers 405 and ListMultipartUploads 501, so the parts of
 * an aborted multipart upload can neither be listed nor removed here: assert that the abort was attempted.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import http, { type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import https from 'node:https'
import { createRequire } from 'node:module'
import type { AddressInfo } from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { pipeline } from 'node:stream/promises'

export interface S3rverHandle {
  /** `http://127.0.0.1:<port>` (https with `tls`) */
  endpoint: string
  port: number
  bucket: string
  region: string
  accessKeyId: string
  secretAccessKey: string
  /** Where s3rver keeps buckets and objects. */
  directory: string
  /** Requests seen by the front: method, path (with query), status answered (0: none, e.g. reset or hung). */
  requests: Array<{ method: string, url: string, status: number }>
  /**
   * Fault injection: called for every correctly signed request; what it returns happens instead of (or before)
   * relaying to s3rver. Set and unset it from a test; undefined (the default) relays everything.
   */
  fault: ((req: IncomingMessage) => S3Fault | undefined) | undefined
  close: () => Promise<void>
}

/** An S3 error answer, a connection reset, a request left unanswered, or a delay before relaying. */
export type S3Fault =
  | { status: number, code: string, message?: string }
  | { reset: true }
  | { hang: true }
  | { delayMs: number }

export interface S3rverOptions {
  /** Bucket to create (default `backups`). */
  bucket?: string
  /** Extra buckets to create. */
  extraBuckets?: string[]
  /** PEM key and certificate: the endpoint speaks HTTPS. */
  tls?: { key: string | Buffer, cert: string | Buffer }
  /** Verify SigV4 signatures (default true). */
  verifySignatures?: boolean
}

interface S3rverInstance {
  run: () => Promise<AddressInfo>
  close: () => Promise<void>
  httpServer?: Server
}
type S3rverClass = new (options: Record<string, unknown>) => S3rverInstance

const ACCESS_KEY_ID = 'S3RVER'
const SECRET_ACCESS_KEY = 'S3RVER'

const require = createRequire(import.meta.url)

export async function startS3rver (options: S3rverOptions = {}): Promise<S3rverHandle> {
  if (!/openssl-legacy-provider/.test(process.execArgv.join(' ') + ' ' + (process.env.NODE_OPTIONS ?? ''))) {
    process.emitWarning('s3rver needs node --openssl-legacy-provider for paginated lists (continuation tokens); run the tests through tap (.taprc) or set NODE_OPTIONS')
  }
  const S3rver = require('s3rver') as S3rverClass
  const bucket = options.bucket ?? 'backups'
  const verify = options.verifySignatures ?? true
  const directory = await mkdtemp(path.join(os.tmpdir(), 'cloudpilot-s3rver-'))
  const backend = new S3rver({
    address: '127.0.0.1',
    port: 0,
    directory,
    silent: true,
    configureBuckets: [bucket, ...(options.extraBuckets ?? [])].map((name) => ({ name })),
  })
  const backendPort = (await backend.run()).port
  const upstream = new http.Agent({ keepAlive: true })
  const requests: S3rverHandle['requests'] = []

  const answerError = (req: IncomingMessage, res: ServerResponse, status: number, code: string, message: string): void => {
    req.resume()
    const body = req.method === 'HEAD' ? '' : `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message><RequestId>cloudpilot-test</RequestId></Error>`
    res.writeHead(status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body) })
    res.end(body)
  }
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const record = { method: req.method ?? '', url: req.url ?? '', status: 0 }
    requests.push(record)
    res.on('finish', () => { record.status = res.statusCode })
    const failure = verify ? checkSignature(req) : undefined
    if (failure !== undefined) { answerError(req, res, 403, failure.code, failure.message); return }
    const fault = handle.fault?.(req)
    if (fault === undefined) { relay(req, res); return }
    if ('reset' in fault) { req.socket.destroy(); return }
    if ('hang' in fault) { req.resume(); return }
    if ('delayMs' in fault) { setTimeout(() => relay(req, res), fault.delayMs); return }
    answerError(req, res, fault.status, fault.code, fault.message ?? fault.code)
  }
  const relay = (req: IncomingMessage, res: ServerResponse): void => {
    const headers = { ...req.headers }
    delete headers.expect
    const forward = http.request({ host: '127.0.0.1', port: backendPort, method: req.method, path: req.url, headers, agent: upstream }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers)
      pipeline(answer, res).catch(() => {})
    })
    forward.on('error', () => { if (!res.headersSent) { res.writeHead(502); res.end() } else res.destroy() })
    pipeline(req, forward).catch(() => { forward.destroy() })
    res.on('close', () => { if (!res.writableFinished) forward.destroy() })
  }
  const front = options.tls === undefined ? http.createServer(handler) : https.createServer({ key: options.tls.key, cert: options.tls.cert }, handler)
  await new Promise<void>((resolve, reject) => {
    front.once('error', reject)
    front.listen(0, '127.0.0.1', () => resolve())
  })
  const port = (front.address() as AddressInfo).port

  let closed = false
  const handle: S3rverHandle = {
    fault: undefined,
    endpoint: `${options.tls === undefined ? 'http' : 'https'}://127.0.0.1:${port}`,
    port,
    bucket,
    region: 'us-east-1',
    accessKeyId: ACCESS_KEY_ID,
    secretAccessKey: SECRET_ACCESS_KEY,
    directory,
    requests,
    close: async () => {
      if (closed) return
      closed = true
      // Keep-alive sockets of clients would otherwise hold close() open.
      front.closeAllConnections()
      await new Promise<void>((resolve) => front.close(() => resolve()))
      upstream.destroy()
      backend.httpServer?.closeAllConnections()
      await backend.close()
      await rm(directory, { recursive: true, force: true })
    },
  }
  return handle
}

// --- SigV4 verification (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html)

interface SignatureFailure { code: 'InvalidAccessKeyId' | 'SignatureDoesNotMatch' | 'AccessDenied', message: string }

function rfc3986 (value: string): string {
  return encodeURIComponent(value).replace(/[!'()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase())
}

function decode (value: string): string {
  try { return decodeURIComponent(value) } catch { return value }
}

function hmac (key: string | Buffer, data: string): Buffer {
  return createHmac('sha256', key).update(data, 'utf8').digest()
}

function checkSignature (req: IncomingMessage): SignatureFailure | undefined {
  const url = req.url ?? '/'
  const q = url.indexOf('?')
  const rawPath = q === -1 ? url : url.slice(0, q)
  const rawQuery = q === -1 ? '' : url.slice(q + 1)
  const params = rawQuery === '' ? [] : rawQuery.split('&').map((pair) => {
    const eq = pair.indexOf('=')
    return eq === -1 ? [decode(pair), ''] as const : [decode(pair.slice(0, eq)), decode(pair.slice(eq + 1))] as const
  })
  const param = (name: string): string | undefined => params.find(([k]) => k === name)?.[1]

  let credential: string, signedHeaders: string, signature: string, amzDate: string, payloadHash: string
  const authorization = req.headers.authorization
  const presigned = param('X-Amz-Signature')
  if (typeof authorization === 'string') {
    const m = /^AWS4-HMAC-SHA256 Credential=([^,]+),\s*SignedHeaders=([^,]+),\s*Signature=([0-9a-f]+)$/.exec(authorization.trim())
    if (m?.[1] === undefined || m[2] === undefined || m[3] === undefined) return { code: 'AccessDenied', message: 'Unsupported Authorization header (only AWS4-HMAC-SHA256)' }
    ;[credential, signedHeaders, signature] = [m[1], m[2], m[3]]
    amzDate = String(req.headers['x-amz-date'] ?? '')
    payloadHash = String(req.headers['x-amz-content-sha256'] ?? 'UNSIGNED-PAYLOAD')
  } else if (presigned !== undefined) {
    credential = param('X-Amz-Credential') ?? ''
    signedHeaders = param('X-Amz-SignedHeaders') ?? ''
    signature = presigned
    amzDate = param('X-Amz-Date') ?? ''
    payloadHash = 'UNSIGNED-PAYLOAD'
  } else {
    return undefined // anonymous request: s3rver decides
  }
  const [accessKeyId, date, region, service, terminator] = credential.split('/')
  if (accessKeyId !== ACCESS_KEY_ID) return { code: 'InvalidAccessKeyId', message: 'The AWS Access Key Id you provided does not exist in our records.' }
  if (date === undefined || region === undefined || service === undefined || terminator !== 'aws4_request') return { code: 'AccessDenied', message: 'Malformed credential scope' }

  const canonicalQuery = params
    .filter(([k]) => k !== 'X-Amz-Signature')
    .map(([k, v]) => [rfc3986(k), rfc3986(v)] as const)
    .sort(([ak, av], [bk, bv]) => ak < bk ? -1 : ak > bk ? 1 : av < bv ? -1 : av > bv ? 1 : 0)
    .map(([k, v]) => `${k}=${v}`)
    .join('&')
  const names = signedHeaders.split(';')
  const canonicalHeaders = names.map((name) => {
    const value = req.headers[name]
    const text = Array.isArray(value) ? value.join(',') : (value ?? '')
    return `${name}:${text.trim().replace(/\s+/g, ' ')}\n`
  }).join('')
  const canonicalRequest = [req.method, rawPath, canonicalQuery, canonicalHeaders, signedHeaders, payloadHash].join('\n')
  const scope = `${date}/${region}/${service}/aws4_request`
  const stringToSign = ['AWS4-HMAC-SHA256', amzDate, scope, createHash('sha256').update(canonicalRequest, 'utf8').digest('hex')].join('\n')
  const key = hmac(hmac(hmac(hmac('AWS4' + SECRET_ACCESS_KEY, date), region), service), 'aws4_request')
  const expected = hmac(key, stringToSign)
  const provided = Buffer.from(signature, 'hex')
  if (provided.length !== expected.length || !timingSafeEqual(provided, expected)) {
    return { code: 'SignatureDoesNotMatch', message: 'The request signature we calculated does not match the signature you provided. Check your key and signing method.' }
  }
  return undefined
}
