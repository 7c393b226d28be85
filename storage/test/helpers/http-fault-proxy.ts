/**
 * An HTTP relay on 127.0.0.1 (port 0) in front of a loopback HTTP service (azurite, a protocol double): it records
 * every request and can answer some itself (an error status, a reset connection, no answer, a delay) before
 * relaying the rest, so retry and failure behaviour can be checked against the real service's answers.
 */
import http, { type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { pipeline } from 'node:stream/promises'

export type HttpFault =
  | { status: number, headers?: Record<string, string>, body?: string }
  | { reset: true }
  | { hang: true }
  | { delayMs: number }

export interface HttpFaultProxy {
  /** `http://127.0.0.1:<port>` */
  origin: string
  port: number
  /** Requests seen: method, path with query, status answered (0: none). */
  requests: Array<{ method: string, url: string, status: number }>
  /** Called for every request; what it returns happens instead of (or before) relaying. */
  fault: ((req: IncomingMessage) => HttpFault | undefined) | undefined
  close: () => Promise<void>
}

export async function startHttpFaultProxy (targetPort: number): Promise<HttpFaultProxy> {
  // A connection per relayed request: an answer the service sent before reading a whole request body (an error
  // to a block upload) must not leave a half-used connection for the next request.
  const upstream = new http.Agent({ keepAlive: false })
  const requests: HttpFaultProxy['requests'] = []
  // The request body is read whole before it is relayed: a service that answers before reading a body (an error
  // to a block upload) then never races a half-sent request.
  const relay = (req: IncomingMessage, res: ServerResponse): void => {
    const parts: Buffer[] = []
    req.on('data', (d: Buffer) => parts.push(d))
    req.on('error', () => res.destroy())
    req.on('end', () => {
      const body = Buffer.concat(parts)
      const headers: Record<string, string | string[] | undefined> = { ...req.headers, host: `127.0.0.1:${targetPort}`, connection: 'close' }
      delete headers['transfer-encoding']
      delete headers.expect
      headers['content-length'] = String(body.length)
      // A service that answers an error before it read the body (azurite refusing a block upload with a wrong key)
      // may close the connection while the body is still being sent; the relay then sees EPIPE/ECONNRESET instead
      // of the answer. Sending the same request again (up to 3 times) gets the service's own answer to the client.
      const send = (attempt: number): void => {
        const forward = http.request({ host: '127.0.0.1', port: targetPort, method: req.method, path: req.url, headers, agent: upstream }, (answer) => {
          res.writeHead(answer.statusCode ?? 502, answer.headers)
          pipeline(answer, res).catch(() => {})
        })
        forward.on('error', () => {
          if (res.headersSent) { res.destroy(); return }
          if (attempt < 3 && !res.destroyed) { send(attempt + 1); return }
          res.writeHead(502)
          res.end()
        })
        res.on('close', () => { if (!res.writableFinished) forward.destroy() })
        forward.end(body)
      }
      send(1)
    })
  }
  const server: Server = http.createServer((req, res) => {
    const record = { method: req.method ?? '', url: req.url ?? '', status: 0 }
    requests.push(record)
    res.on('finish', () => { record.status = res.statusCode })
    const fault = proxy.fault?.(req)
    if (fault === undefined) { relay(req, res); return }
    if ('reset' in fault) { req.socket.destroy(); return }
    if ('hang' in fault) { req.resume(); return }
    if ('delayMs' in fault) { setTimeout(() => relay(req, res), fault.delayMs); return }
    req.resume()
    const body = fault.body ?? ''
    res.writeHead(fault.status, { 'content-length': Buffer.byteLength(body), ...fault.headers })
    res.end(req.method === 'HEAD' ? undefined : body)
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  const port = (server.address() as AddressInfo).port
  const proxy: HttpFaultProxy = {
    origin: `http://127.0.0.1:${port}`,
    port,
    requests,
    fault: undefined,
    close: async () => {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
      upstream.destroy()
    },
  }
  return proxy
}
