import { PassThrough, type Readable } from 'node:stream'
import { abortError } from './node-error-map.ts'

/**
 * What `get` hands out: the transport's stream with its failures mapped to CloudPilotErrors (a connection lost
 * half way is UNREACHABLE, not a bare ECONNRESET), destroyed with an AbortError when the signal fires, and
 * stopping the transport when the consumer destroys it early.
 */
export function downloadStream (source: Readable, mapError: (err: unknown) => Error, signal?: AbortSignal): Readable {
  const out = new PassThrough({ highWaterMark: 256 * 1024 })
  const onAbort = (): void => { out.destroy(abortError(signal)) }
  source.on('error', (err) => { if (!out.destroyed) out.destroy(signal?.aborted === true ? abortError(signal) : mapError(err)) })
  out.on('close', () => {
    signal?.removeEventListener('abort', onAbort)
    if (!source.destroyed) source.destroy()
  })
  if (signal !== undefined) {
    if (signal.aborted) onAbort()
    else signal.addEventListener('abort', onAbort, { once: true })
  }
  source.pipe(out)
  return out
}
