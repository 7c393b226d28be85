import { Transform, type Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { CloudPilotError } from '@cloudpilot/protocol'
import { isAbortError } from './node-error-map.ts'
import { throttle } from './throttle.ts'

/**
 * The front of every put: the caller's body, the destination's upload rate limit (`rateLimitBytesPerSecond`,
 * applied in the stream, so backpressure slows the source) and a byte counter. The driver consumes `stream`
 * (pipes it into its sink or reads chunks from it); destroying `stream` stops and destroys the body.
 *
 * It also tells the source's own failure (a dump that died: its error is what the caller must see) apart from the
 * error that `pipeline` passes back to the source after a later stage failed.
 */
export interface UploadSource {
  /** The bytes to upload (throttled, counted). */
  readonly stream: Readable
  /** Bytes that passed so far. */
  bytes: () => number
  /** The source's own failure, if it failed before anything downstream did. */
  sourceFailure: () => unknown
  /** Settles when the front pipeline has ended (never rejects: failures are read through the other fields). */
  readonly settled: Promise<void>
}

export function uploadSource (body: Readable, options: { rateLimitBytesPerSecond?: number | undefined, signal?: AbortSignal | undefined }): UploadSource {
  let bytes = 0
  const counter = new Transform({
    transform (chunk: Buffer, _encoding, callback) { bytes += chunk.length; callback(null, chunk) },
  })
  let sourceFailure: unknown
  const onSourceError = (err: unknown): void => { if (!counter.destroyed) sourceFailure ??= err }
  body.once('error', onSourceError)
  const stages: Array<Readable | Transform> = [body]
  const rate = options.rateLimitBytesPerSecond
  if (rate !== undefined && rate > 0) stages.push(throttle(rate))
  stages.push(counter)
  // `pipeline` with a readable last stage leaves it open for the consumer and settles when it has been read to
  // the end (or anything failed / the signal fired).
  const settled = pipeline(stages, options.signal === undefined ? {} : { signal: options.signal })
    .then(() => undefined, () => undefined)
    .finally(() => { body.off('error', onSourceError) })
  return { stream: counter, bytes: () => bytes, sourceFailure: () => sourceFailure, settled }
}

/** The source stream failed: its own CloudPilotError (e.g. DUMP_FAILED) or AbortError passes through. */
export function sourceError (err: unknown): Error {
  if (err instanceof CloudPilotError || isAbortError(err)) return err as Error
  const message = err instanceof Error ? err.message : String(err)
  return new CloudPilotError('UPLOAD_FAILED', `reading the data to upload failed: ${message}`, { cause: err, retryable: false })
}

export interface Chunk {
  data: Buffer
  /** Offset of the first byte in the object. */
  offset: number
  /** Whether this is the last chunk (then offset + data.length is the object's size). */
  last: boolean
}

/**
 * Cuts a stream into chunks of exactly `size` bytes (the last one may be shorter, or empty for an empty stream),
 * knowing for each whether it is the last: resumable protocols must announce the total size with the last chunk.
 * Holds at most about two chunks in memory; reads on only when the consumer asks for the next chunk.
 */
export async function * chunks (stream: Readable, size: number): AsyncGenerator<Chunk> {
  let pending: Buffer[] = []
  let pendingBytes = 0
  let ready: Buffer | undefined
  let offset = 0
  const take = (): Buffer => {
    const all = pending.length === 1 ? pending[0] as Buffer : Buffer.concat(pending, pendingBytes)
    const chunk = all.subarray(0, size)
    const rest = all.subarray(size)
    pending = rest.length > 0 ? [rest] : []
    pendingBytes = rest.length
    return chunk
  }
  for await (const piece of stream) {
    const b = piece as Buffer
    if (b.length === 0) continue
    pending.push(b)
    pendingBytes += b.length
    while (pendingBytes >= size) {
      const next = take()
      // A full chunk followed by more bytes: the chunk before it is not the last one.
      if (ready !== undefined) {
        yield { data: ready, offset, last: false }
        offset += ready.length
      }
      ready = next
    }
  }
  if (pendingBytes > 0) {
    if (ready !== undefined) {
      yield { data: ready, offset, last: false }
      offset += ready.length
    }
    yield { data: Buffer.concat(pending, pendingBytes), offset, last: true }
  } else {
    yield { data: ready ?? Buffer.alloc(0), offset, last: true }
  }
}
