/**
 * The loopback HTTP(S) server under the REST protocol doubles (Drive, Cloudinary): port 0, a log of requests,
 * and fault injection before the double's own handler (an error answer, a reset connection, no answer, a delay).
 * The double gets the request with its whole body read.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http'
import https from 'node:https'
import type { AddressInfo } from 'node:net'

export type DoubleFault =
  | { status: number, body?: unknown, headers?: Record<string, string> }
  | { reset: true }
  | { hang: true }
  | { delayMs: number }

export interface DoubleServer {
  origin: string
  port: number
  requests: Array<{ method: string, url: string, status: number }>
  fault: ((req: IncomingMessage) => DoubleFault | undefined) | undefined
  close: () => Promise<void>
}

export type DoubleHandler = (req: IncomingMessage, res: ServerResponse, body: Buffer, url: URL) => void | Promise<void>

export function sendJson (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json; charset=UTF-8', 'content-length': Buffer.byteLength(text), ...headers })
  res.end(text)
}

export async function startDoubleServer (handle: DoubleHandler, options: { tls?: { key: Buffer, cert: Buffer } } = {}): Promise<DoubleServer> {
  const requests: DoubleServer['requests'] = []
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const record = { method: req.method ?? '', url: req.url ?? '', status: 0 }
    requests.push(record)
    res.on('finish', () => { record.status = res.statusCode })
    const fault = server.fault?.(req)
    if (fault !== undefined && 'reset' in fault) { req.socket.destroy(); return }
    if (fault !== undefined && 'hang' in fault) { req.resume(); return }
    const parts: Buffer[] = []
    req.on('data', (d: Buffer) => parts.push(d))
    req.on('end', () => {
      const run = (): void => {
        if (fault !== undefined && 'status' in fault) { sendJson(res, fault.status, fault.body ?? {}, fault.headers); return }
        Promise.resolve(handle(req, res, Buffer.concat(parts), new URL(req.url ?? '/', server.origin))).catch((err: unknown) => {
          if (!res.headersSent) sendJson(res, 500, { error: { code: 500, message: `double failed: ${(err as Error).message}` } })
          else res.destroy()
        })
      }
      if (fault !== undefined && 'delayMs' in fault) setTimeout(run, fault.delayMs)
      else run()
    })
  }
  const http1 = options.tls === undefined ? http.createServer(handler) : https.createServer({ key: options.tls.key, cert: options.tls.cert }, handler)
  await new Promise<void>((resolve, reject) => {
    http1.once('error', reject)
    http1.listen(0, '127.0.0.1', () => resolve())
  })
  const port = (http1.address() as AddressInfo).port
  const server: DoubleServer = {
    origin: `${options.tls === undefined ? 'http' : 'https'}://127.0.0.1:${port}`,
    port,
    requests,
    fault: undefined,
    close: async () => {
      http1.closeAllConnections()
      await new Promise<void>((resolve) => http1.close(() => resolve()))
    },
  }
  return server
}
