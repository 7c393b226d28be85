import t from 'tap'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import { Tee } from '../src/pipeline/tee.ts'

const CHUNK = 64 * 1024

/** A source that counts what it produced (it only produces when read). */
function counted (total: number): { stream: Readable, produced: () => number } {
  let produced = 0
  const stream = new Readable({
    read () {
      if (produced >= total) { this.push(null); return }
      produced += CHUNK
      this.push(Buffer.alloc(CHUNK, produced % 251))
    },
  })
  return { stream, produced: () => produced }
}

function sink (delayMs: number): { stream: Writable, received: () => number } {
  let received = 0
  const stream = new Writable({
    highWaterMark: 256 * 1024,
    write (chunk: Buffer, _enc, cb) {
      received += chunk.length
      if (delayMs === 0) cb()
      else setTimeout(cb, delayMs)
    },
  })
  return { stream, received: () => received }
}

t.test('the tee moves at the pace of its slowest sink: the producer never runs ahead unboundedly', async (t) => {
  const total = 64 * 1024 * 1024
  const source = counted(total)
  const fast = sink(0)
  const slow = sink(1)
  let maxAhead = 0
  const timer = setInterval(() => { maxAhead = Math.max(maxAhead, source.produced() - slow.received()) }, 1)
  await pipeline(source.stream, new Tee([{ stream: fast.stream }, { stream: slow.stream }]))
  clearInterval(timer)
  t.equal(fast.received(), total)
  t.equal(slow.received(), total)
  t.ok(maxAhead < 2 * 1024 * 1024, `producer at most ${maxAhead} bytes ahead of the slow sink`)
})

t.test('a failing sink destroys the tee, and the other sink is destroyed with the same error', async (t) => {
  const source = counted(8 * 1024 * 1024)
  const ok = sink(0)
  let writes = 0
  const failing = new Writable({
    write (_chunk, _enc, cb) {
      if (++writes === 3) cb(Object.assign(new Error('disk full'), { code: 'ENOSPC' }))
      else cb()
    },
  })
  const mapped = new Error('mapped NO_SPACE')
  await t.rejects(pipeline(source.stream, new Tee([{ stream: ok.stream }, { stream: failing, mapError: () => mapped }])), mapped)
  t.ok(ok.stream.destroyed, 'the other sink is destroyed')
})

t.test('a sink that stops reading blocks the tee until it drains', async (t) => {
  let release: (() => void) | null = null
  const stalled = new Writable({
    highWaterMark: CHUNK,
    write (_chunk, _enc, cb) { release = () => { cb() } },
  })
  const source = counted(4 * 1024 * 1024)
  const done = pipeline(source.stream, new Tee([{ stream: stalled }]))
  await sleep(50)
  t.ok(source.produced() <= 8 * CHUNK, `only ${source.produced()} bytes produced while the sink is stalled`)
  const pump = setInterval(() => { const r = release; release = null; r?.() }, 0)
  await done
  clearInterval(pump)
  t.equal(source.produced(), 4 * 1024 * 1024)
})
