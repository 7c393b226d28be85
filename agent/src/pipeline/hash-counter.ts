import { createHash, type Hash } from 'node:crypto'
import { Transform, type TransformCallback } from 'node:stream'

export interface HashCounterOptions {
  /** Compute the sha256 of the bytes (default true); false makes a plain byte counter. */
  hash?: boolean
  /** Told about every chunk's size as it passes (feeds the progress meter). */
  onBytes?: (bytes: number) => void
  highWaterMark?: number
}

/**
 * Pass-through that hashes (sha256) and counts the bytes flowing through it, in-stream: the archive is never
 * re-read to checksum it, and nothing is buffered beyond the stream's high-water mark.
 */
export class HashCounter extends Transform {
  bytes = 0
  private readonly hash: Hash | null
  private digestHex: string | null = null
  private readonly onBytes: ((bytes: number) => void) | undefined

  constructor (options: HashCounterOptions = {}) {
    super(options.highWaterMark === undefined ? {} : { highWaterMark: options.highWaterMark })
    this.hash = options.hash === false ? null : createHash('sha256')
    this.onBytes = options.onBytes
  }

  override _transform (chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length
    this.hash?.update(chunk)
    this.onBytes?.(chunk.length)
    callback(null, chunk)
  }

  /** Hex sha256 of everything that passed; valid once the stream has ended. */
  get sha256 (): string {
    if (this.hash === null) throw new Error('this HashCounter does not hash')
    if (!this.writableFinished) throw new Error('sha256 read before the stream ended')
    this.digestHex ??= this.hash.digest('hex')
    return this.digestHex
  }
}
