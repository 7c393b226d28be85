import { createHash, randomFillSync } from 'node:crypto'
import { Readable } from 'node:stream'

/**
 * A byte stream generated on the fly (never held in memory as a whole), hashing what it emits.
 * It is a plain byte Readable with a small highWaterMark, so it is only read as fast as the consumer takes it:
 * when it has emitted N bytes, the consumer has really taken about N bytes.
 */
export interface ByteSource {
  stream: Readable
  /** sha256 (hex) of everything emitted; complete once the stream ended. */
  sha256: () => string
  /** Bytes emitted so far. */
  emitted: () => number
  /** The bytes emitted in [window.start, window.end) when a window was asked for. */
  window: () => Buffer
}

export interface ByteSourceOptions {
  chunkSize?: number
  /** Fail with this error once this many bytes were emitted. */
  failAfter?: { bytes: number, error: Error }
  /** Called after each chunk with the bytes emitted so far. */
  onProgress?: (emitted: number) => void
  /** Keep a copy of the bytes in [start, end) (for ranged reads across part boundaries). */
  window?: { start: number, end: number }
}

export function byteSource (size: number, options: ByteSourceOptions = {}): ByteSource {
  const chunkSize = options.chunkSize ?? 256 * 1024
  const hash = createHash('sha256')
  const kept: Buffer[] = []
  let emitted = 0
  let digest: string | undefined
  const stream = new Readable({
    highWaterMark: 64 * 1024,
    read () {
      const fail = options.failAfter
      if (fail !== undefined && emitted >= fail.bytes) { this.destroy(fail.error); return }
      if (emitted >= size) { this.push(null); return }
      let n = Math.min(chunkSize, size - emitted)
      if (fail !== undefined) n = Math.min(n, fail.bytes - emitted)
      const chunk = randomFillSync(Buffer.allocUnsafe(n))
      hash.update(chunk)
      const w = options.window
      if (w !== undefined && emitted < w.end && emitted + n > w.start) {
        kept.push(Buffer.from(chunk.subarray(Math.max(0, w.start - emitted), Math.min(n, w.end - emitted))))
      }
      emitted += n
      this.push(chunk)
      options.onProgress?.(emitted)
    },
  })
  return {
    stream,
    sha256: () => (digest ??= hash.digest('hex')),
    emitted: () => emitted,
    window: () => Buffer.concat(kept),
  }
}

/** Reads a stream to its end: byte count and sha256. */
export async function drain (stream: Readable): Promise<{ bytes: number, sha256: string }> {
  const hash = createHash('sha256')
  let bytes = 0
  for await (const chunk of stream) {
    const b = chunk as Buffer
    bytes += b.length
    hash.update(b)
  }
  return { bytes, sha256: hash.digest('hex') }
}

/** Reads a stream into one Buffer (small objects only). */
export async function readAll (stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of stream) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}
