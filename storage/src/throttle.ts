import { Transform } from 'node:stream'

/**
 * A pass-through that holds bytes back so the average rate since the first byte stays at or under
 * `bytesPerSecond` (the destination's `rateLimitBytesPerSecond`). Backpressure does the rest: the source is not
 * read while a chunk waits.
 */
export function throttle (bytesPerSecond: number): Transform {
  let started: number | undefined
  let passed = 0
  let timer: NodeJS.Timeout | undefined
  return new Transform({
    transform (chunk: Buffer, _encoding, callback) {
      started ??= performance.now()
      passed += chunk.length
      const wait = started + (passed / bytesPerSecond) * 1000 - performance.now()
      if (wait <= 1) { callback(null, chunk); return }
      timer = setTimeout(() => { timer = undefined; callback(null, chunk) }, wait)
    },
    destroy (err, callback) {
      if (timer !== undefined) clearTimeout(timer)
      callback(err)
    },
  })
}
