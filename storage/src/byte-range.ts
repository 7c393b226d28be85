import { CloudPilotError } from '@cloudpilot/protocol'
import { Readable } from 'node:stream'

export interface ByteRange { start: number, end?: number }

/** Validates an inclusive byte range: `start` >= 0, `end` >= `start` when given, both safe integers. */
export function checkRange (range: ByteRange): ByteRange {
  const { start, end } = range
  if (!Number.isSafeInteger(start) || start < 0) throw new CloudPilotError('VALIDATION_FAILED', `range start must be an integer >= 0, got ${String(start)}`)
  if (end !== undefined && (!Number.isSafeInteger(end) || end < start)) throw new CloudPilotError('VALIDATION_FAILED', `range end must be an integer >= start (${start}), got ${String(end)}`)
  return end === undefined ? { start } : { start, end }
}

/** The HTTP `Range` header value of an inclusive byte range (RFC 9110 §14.1.2). */
export function rangeHeader (range: ByteRange): string {
  return `bytes=${range.start}-${range.end ?? ''}`
}

/**
 * The bytes of an answer to a ranged request that start at `skip` and are `take` long. For servers that answer a
 * range with more than was asked (s3rver reads `bytes=0-0` as the whole object, some servers ignore Range and
 * answer 200): the caller gets exactly the range it asked for. Stops reading the source once it has enough.
 */
export function sliceStream (source: Readable, skip: number, take: number): Readable {
  async function * slice (): AsyncGenerator<Buffer> {
    let toSkip = skip
    let left = take
    if (left <= 0) return
    for await (const chunk of source) {
      let b = chunk as Buffer
      if (toSkip > 0) {
        if (b.length <= toSkip) { toSkip -= b.length; continue }
        b = b.subarray(toSkip)
        toSkip = 0
      }
      if (b.length >= left) { yield b.subarray(0, left); return }
      left -= b.length
      yield b
    }
  }
  return Readable.from(slice(), { objectMode: false })
}

/** `Content-Range: bytes a-b/total` (total may be `*`). */
export function parseContentRange (header: string | undefined): { start: number, end: number, total: number | undefined } | undefined {
  const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(header?.trim() ?? '')
  if (m?.[1] === undefined || m[2] === undefined || m[3] === undefined) return undefined
  return { start: Number(m[1]), end: Number(m[2]), total: m[3] === '*' ? undefined : Number(m[3]) }
}
