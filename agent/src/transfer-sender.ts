import { createReadStream } from 'node:fs'
import { realpath, stat } from 'node:fs/promises'
import http from 'node:http'
import https from 'node:https'
import path from 'node:path'
import { pipeline } from 'node:stream/promises'
import type { Readable } from 'node:stream'
import { CloudPilotError, type TransferSendFrame, type DestinationType } from '@cloudpilot/protocol'
import { openDestination } from '@cloudpilot/storage'

/**
 * Sends a file the coordinator asked for (a download of a spool copy or a `local` destination object) with an
 * authenticated PUT to <coordinator>/agent/transfers/<id>. Only files inside the spool directory or objects
 * of the given destination can be sent: the coordinator cannot make the agent read arbitrary paths.
 */
export async function sendTransfer (frame: TransferSendFrame, options: { coordinatorUrl: string, credential: string, spoolDir: string, signal: AbortSignal }): Promise<void> {
  const source = await openSource(frame, options.spoolDir, options.signal)
  const url = new URL(`${options.coordinatorUrl}/agent/transfers/${frame.transferId}`)
  const client = url.protocol === 'https:' ? https : http
  const request = client.request(url, {
    method: 'PUT',
    headers: {
      authorization: `Bearer ${options.credential}`,
      'x-transfer-token': frame.token,
      'content-type': 'application/octet-stream',
      ...(source.size === null ? { 'transfer-encoding': 'chunked' } : { 'content-length': String(source.size) }),
    },
    signal: options.signal,
  })
  const response = new Promise<http.IncomingMessage>((resolve, reject) => {
    request.once('response', resolve)
    request.once('error', reject)
  })
  await pipeline(source.stream, request)
  const res = await response
  res.resume()
  if (res.statusCode !== 204) throw new CloudPilotError('UPLOAD_FAILED', `coordinator answered the transfer with HTTP ${res.statusCode ?? 0}`)
}

async function openSource (frame: TransferSendFrame, spoolDir: string, signal: AbortSignal): Promise<{ stream: Readable, size: number | null }> {
  if (frame.localPath !== null) {
    let real: string
    try {
      real = await realpath(frame.localPath)
    } catch {
      throw new CloudPilotError('OBJECT_NOT_FOUND', `the local copy ${frame.localPath} no longer exists on the server`, { hint: 'It may have been removed by retention or by hand; download it from the destination instead.' })
    }
    const root = await realpath(spoolDir).catch(() => path.resolve(spoolDir))
    if (!real.startsWith(root + path.sep)) throw new CloudPilotError('FORBIDDEN', 'the requested file is outside the agent\'s spool directory')
    const s = await stat(real)
    return { stream: createReadStream(real, { signal }), size: s.size }
  }
  if (frame.objectKey === null || frame.destination === null) throw new CloudPilotError('VALIDATION_FAILED', 'transfer names neither a local path nor an object')
  const d = frame.destination as { type: DestinationType, config: Record<string, unknown>, credentials?: Record<string, unknown>, allowPrivateEndpoints?: boolean }
  const driver = await openDestination({ type: d.type, config: d.config, credentials: d.credentials ?? {} }, { allowPrivateEndpoints: d.allowPrivateEndpoints === true })
  const info = await driver.stat(frame.objectKey, { signal })
  if (info === null) throw new CloudPilotError('OBJECT_NOT_FOUND', `object ${frame.objectKey} does not exist at the destination`)
  const stream = await driver.get(frame.objectKey, { signal })
  stream.once('close', () => { driver.close().catch(() => {}) })
  return { stream, size: info.sizeBytes }
}
