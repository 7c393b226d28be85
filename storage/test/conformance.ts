/**
 * The storage driver conformance suite: what every destination driver (local, s3, and later sftp, azure_blob,
 * gcs, google_drive, cloudinary) must do, checked against a real (or faithfully emulated) backend.
 *
 *   runConformance(t, 's3', async () => new S3Driver(...), { cleanupAttempted: (key) => ... })
 *
 * Every check asserts behaviour (bytes, codes, what is left at the destination), never only "it did not throw".
 */
import { randomBytes } from 'node:crypto'
import { Readable } from 'node:stream'
import type { TAP } from 'tap'
import { CloudPilotError } from '@cloudpilot/protocol'
import type { ListPage, ObjectInfo, StorageDriver } from '../src/driver.ts'
import { byteSource, drain, readAll } from './helpers/byte-source.ts'

const MiB = 1024 * 1024

/** The root `t` or a subtest's `t` (the assertions used here are the same on both). */
type Tap = Pick<TAP, 'equal' | 'same' | 'ok' | 'rejects'>

export interface ConformanceOptions {
  /**
   * Temporary artefacts of interrupted puts that the backend can show (local: `*.part-*` files; an S3 that can
   * list multipart uploads: the in-progress uploads). Must be empty after every failed or aborted put.
   */
  leftovers?: () => Promise<string[]>
  /**
   * For backends whose leftovers cannot be listed (s3rver answers ListMultipartUploads with 501): whether the
   * driver tried to remove what the interrupted put of `key` left (e.g. sent AbortMultipartUpload for it).
   */
  cleanupAttempted?: (key: string) => boolean | Promise<boolean>
  /** Size of the large streamed object; default 50 MB (must exceed several part sizes). */
  largeObjectBytes?: number
  /** A byte offset where the driver switches parts (s3: the part size); ranged reads are checked across it. */
  partBoundary?: number
  /** How far into a put the mid-put failure and abort happen; default 20 MiB (> 2 parts of 8 MiB). */
  interruptAfterBytes?: number
  /**
   * Whether the backend stores empty objects (default true). A driver whose backend cannot (Cloudinary refuses
   * empty files) must refuse a put of nothing with a non-retryable UPLOAD_FAILED and leave nothing behind.
   */
  emptyObjects?: boolean
}

function small (text: string): Readable {
  return Readable.from([Buffer.from(text)])
}

async function listAll (driver: StorageDriver, prefix: string, limit?: number): Promise<{ items: ObjectInfo[], pages: ListPage[] }> {
  const items: ObjectInfo[] = []
  const pages: ListPage[] = []
  let cursor: string | null = null
  for (let i = 0; i < 1000; i++) {
    const page: ListPage = await driver.list(prefix, limit === undefined ? { cursor } : { cursor, limit })
    pages.push(page)
    items.push(...page.items)
    cursor = page.nextCursor
    if (cursor === null) break
  }
  return { items, pages }
}

export function runConformance (t: TAP, name: string, makeDriver: () => Promise<StorageDriver>, options: ConformanceOptions = {}): void {
  t.test(`${name}: driver conformance`, async (t) => {
    const driver = await makeDriver()
    t.teardown(() => driver.close())
    const run = `conformance-${randomBytes(4).toString('hex')}`
    const k = (rel: string): string => `${run}/${rel}`
    const large = options.largeObjectBytes ?? 50 * 1000 * 1000
    const boundary = options.partBoundary ?? 8 * MiB
    const interruptAt = options.interruptAfterBytes ?? 20 * MiB

    /** After a failed or aborted put of a new key: nothing under the key, no leftovers, cleanup attempted. */
    const assertNothingLeft = async (t: Tap, key: string, what: string, multipart: boolean): Promise<void> => {
      // First, before any other call: the cleanup must be done when put settles, not later in the background.
      if (multipart && options.cleanupAttempted !== undefined) t.ok(await options.cleanupAttempted(key), `${what}: the driver tried to remove the interrupted upload before put settled`)
      t.equal(await driver.stat(key), null, `${what}: stat finds nothing under the key`)
      const listed = await listAll(driver, key)
      t.same(listed.items.map((i) => i.key), [], `${what}: list shows nothing under the key`)
      await t.rejects(driver.get(key), { code: 'OBJECT_NOT_FOUND' }, `${what}: get finds nothing`)
      if (options.leftovers !== undefined) t.same(await options.leftovers(), [], `${what}: no temporary leftovers`)
    }

    t.test('streamed put of a large object (several parts), byte-exact get', async (t) => {
      const key = k('large/archive.tar.gz')
      const src = byteSource(large, { chunkSize: 1 * MiB, window: { start: boundary - 100, end: boundary + 100 } })
      let peakRss = process.memoryUsage().rss
      const baseRss = peakRss
      const sampler = setInterval(() => { peakRss = Math.max(peakRss, process.memoryUsage().rss) }, 25)
      const started = performance.now()
      let result
      try {
        result = await driver.put(key, src.stream, { contentType: 'application/gzip' })
      } finally {
        clearInterval(sampler)
      }
      t.comment(`put ${large} bytes in ${Math.round(performance.now() - started)} ms; test process RSS +${Math.round((peakRss - baseRss) / MiB)} MiB (includes the backend when it runs in-process)`)
      t.same(result, { key, sizeBytes: large }, 'put reports the key and the bytes it stored')
      const info = await driver.stat(key)
      t.equal(info?.sizeBytes, large, 'stat size')
      const back = await drain(await driver.get(key))
      t.equal(back.bytes, large, 'get returns every byte')
      t.equal(back.sha256, src.sha256(), 'get returns the same bytes (sha256)')
      const across = await readAll(await driver.get(key, { range: { start: boundary - 100, end: boundary + 99 } }))
      t.ok(across.equals(src.window()), 'ranged get across a part boundary returns exactly those bytes')
      await driver.delete(key)
    })

    t.test('ranged get', async (t) => {
      const key = k('range/object.bin')
      const data = randomBytes(100_000)
      await driver.put(key, Readable.from([data]))
      const read = async (range: { start: number, end?: number }): Promise<Buffer> => await readAll(await driver.get(key, { range }))
      t.ok((await read({ start: 1000, end: 1999 })).equals(data.subarray(1000, 2000)), 'inclusive start..end')
      t.ok((await read({ start: 99_000 })).equals(data.subarray(99_000)), 'start to the end')
      t.ok((await read({ start: 0, end: 0 })).equals(data.subarray(0, 1)), 'a single byte')
      t.ok((await read({ start: 99_990, end: 500_000 })).equals(data.subarray(99_990)), 'an end past the object stops at its end')
      t.equal((await read({ start: 100_000 })).length, 0, 'a start at the end reads nothing')
      await t.rejects(driver.get(key, { range: { start: 10, end: 9 } }), { code: 'VALIDATION_FAILED' }, 'end before start is refused')
      await t.rejects(driver.get(key, { range: { start: -1 } }), { code: 'VALIDATION_FAILED' }, 'negative start is refused')
      await t.rejects(driver.get(k('range/missing.bin'), { range: { start: 0, end: 9 } }), { code: 'OBJECT_NOT_FOUND' }, 'ranged get of a missing key')
      await driver.delete(key)
    })

    t.test('stat', async (t) => {
      const key = k('stat/one.sql.gz')
      const before = Date.now()
      await driver.put(key, Readable.from([randomBytes(1234)]))
      const info = await driver.stat(key)
      t.equal(info?.key, key, 'key as given (without any destination prefix)')
      t.equal(info?.sizeBytes, 1234, 'size')
      t.ok(info?.modifiedAt instanceof Date, 'modifiedAt is a Date')
      const modified = info?.modifiedAt.getTime() ?? 0
      t.ok(modified >= before - 120_000 && modified <= Date.now() + 120_000, 'modifiedAt is about now')
      t.equal(await driver.stat(k('stat/missing.sql.gz')), null, 'missing key: null')
      t.equal(await driver.stat(k('stat')), null, 'a "directory" of keys is not an object: null')
      await driver.delete(key)
    })

    t.test('list: prefix, lexicographic order, pagination with limit', async (t) => {
      const expected: Array<{ key: string, size: number }> = []
      for (let i = 0; i < 23; i++) expected.push({ key: k(`list/obj-${String(i).padStart(2, '0')}.gz`), size: i + 1 })
      expected.push({ key: k('list/sub/deep.gz'), size: 7 })
      await Promise.all(expected.map(async ({ key, size }) => await driver.put(key, Readable.from([randomBytes(size)]))))
      await driver.put(k('list-sibling/not-me.gz'), small('x'))
      expected.sort((a, b) => a.key < b.key ? -1 : 1)

      const { items, pages } = await listAll(driver, k('list/'), 5)
      t.ok(pages.length >= 5, `more than one page (${pages.length} pages)`)
      t.ok(pages.every((p) => p.items.length <= 5), 'no page exceeds the limit')
      t.equal(pages.at(-1)?.nextCursor, null, 'the last page has no cursor')
      t.same(items.map((i) => i.key), expected.map((e) => e.key), 'every key once, in lexicographic order, nothing outside the prefix')
      t.same(items.map((i) => i.sizeBytes), expected.map((e) => e.size), 'sizes')
      t.ok(items.every((i) => i.modifiedAt instanceof Date), 'modifiedAt dates')

      const whole = await driver.list(k('list/'))
      t.equal(whole.items.length, 24, 'default page size holds them all')
      t.equal(whole.nextCursor, null, 'and needs no cursor')
      const partial = await driver.list(k('list/obj-1'))
      t.same(partial.items.map((i) => i.key), expected.filter((e) => e.key.startsWith(k('list/obj-1'))).map((e) => e.key), 'a prefix that is not a whole segment')
      t.same(await driver.list(k('nothing-here/')), { items: [], nextCursor: null }, 'an empty prefix: no items, no cursor')
      await Promise.all([...expected.map(async (e) => await driver.delete(e.key)), driver.delete(k('list-sibling/not-me.gz'))])
    })

    t.test('delete', async (t) => {
      const key = k('delete/me.sql.gz')
      await driver.put(key, small('to be deleted'))
      await driver.delete(key)
      t.equal(await driver.stat(key), null, 'gone from stat')
      await t.rejects(driver.get(key), { code: 'OBJECT_NOT_FOUND' }, 'gone from get')
      t.same((await driver.list(k('delete/'))).items, [], 'gone from list')
      await t.resolves(driver.delete(key), 'deleting it again is not an error')
      await t.resolves(driver.delete(k('delete/never-existed')), 'deleting a key that never existed is not an error')
    })

    t.test('overwrite', async (t) => {
      const key = k('overwrite/same.sql.gz')
      await driver.put(key, small('first version'))
      const second = 'the second, longer version of the object'
      const result = await driver.put(key, small(second))
      t.equal(result.sizeBytes, second.length, 'put reports the new size')
      t.equal((await readAll(await driver.get(key))).toString(), second, 'get returns the new content')
      t.equal((await driver.stat(key))?.sizeBytes, second.length, 'stat has the new size')
      t.equal((await driver.list(k('overwrite/'))).items.length, 1, 'one object, not two')
      await driver.delete(key)
    })

    t.test('empty object', async (t) => {
      const key = k('empty/zero.bin')
      if (options.emptyObjects === false) {
        const err = await t.rejects(driver.put(key, Readable.from([])), { code: 'UPLOAD_FAILED' }, 'the backend stores no empty objects: put of nothing is refused')
        t.equal((err as CloudPilotError).retryable, false, 'and not retryable')
        t.equal(await driver.stat(key), null, 'nothing under the key')
        return
      }
      t.same(await driver.put(key, Readable.from([])), { key, sizeBytes: 0 }, 'put of nothing')
      t.equal((await driver.stat(key))?.sizeBytes, 0, 'stat size 0')
      t.equal((await readAll(await driver.get(key))).length, 0, 'get reads nothing')
      await driver.delete(key)
    })

    t.test('unicode and special characters in keys', async (t) => {
      const names = ['données/ümlaut ✓.sql.gz', '日本語/バックアップ 2024.tar.zst', 'spaces and+plus%25percent&amp=eq.txt', 'quote\'s (1) [x] ~tilde$.sql', 'emoji 🗄️/db.sql.gz']
      for (const [i, rel] of names.entries()) {
        const key = k(`unicode/${rel}`)
        await driver.put(key, small(`content ${i}`))
        t.equal((await readAll(await driver.get(key))).toString(), `content ${i}`, `get ${rel}`)
        t.equal((await driver.stat(key))?.sizeBytes, `content ${i}`.length, `stat ${rel}`)
      }
      const listed = (await listAll(driver, k('unicode/'))).items.map((i) => i.key).sort()
      t.same(listed, names.map((n) => k(`unicode/${n}`)).sort(), 'list returns the keys exactly as written')
      for (const rel of names) await driver.delete(k(`unicode/${rel}`))
      t.same((await driver.list(k('unicode/'))).items, [], 'all deleted')
    })

    t.test('concurrent puts', async (t) => {
      const sizes = [1, 1000, 300_000, 5 * MiB, 9 * MiB, 17 * MiB]
      const sources = sizes.map((size) => byteSource(size))
      const results = await Promise.all(sources.map(async (src, i) => await driver.put(k(`concurrent/${i}.bin`), src.stream)))
      t.same(results.map((r) => r.sizeBytes), sizes, 'every put reports its size')
      for (const [i, src] of sources.entries()) {
        const back = await drain(await driver.get(k(`concurrent/${i}.bin`)))
        t.equal(back.sha256, src.sha256(), `object ${i} (${sizes[i]} bytes) is byte-exact`)
      }
      await Promise.all(sizes.map(async (_s, i) => await driver.delete(k(`concurrent/${i}.bin`))))
    })

    t.test('a source that fails half way', async (t) => {
      const key = k('failing/half.sql.gz')
      const src = byteSource(large, { chunkSize: 1 * MiB, failAfter: { bytes: interruptAt, error: new Error('source exploded half way') } })
      const err = await t.rejects(driver.put(key, src.stream), { code: 'UPLOAD_FAILED' }, 'put rejects UPLOAD_FAILED')
      t.match(String((err as Error).message), /source exploded half way/, 'the source\'s own error is reported, not a cleanup error')
      t.ok(src.emitted() >= interruptAt, 'the driver had read up to the failure')
      await assertNothingLeft(t, key, 'failed put', true)

      const dumpKey = k('failing/dump.sql.gz')
      const dump = byteSource(4 * MiB, { failAfter: { bytes: 1 * MiB, error: new CloudPilotError('DUMP_FAILED', 'mysqldump exited 2') } })
      await t.rejects(driver.put(dumpKey, dump.stream), { code: 'DUMP_FAILED', message: 'mysqldump exited 2' }, 'a CloudPilotError from the source passes through unchanged')
      await assertNothingLeft(t, dumpKey, 'failed small put', false)

      const keep = k('failing/existing.sql.gz')
      await driver.put(keep, small('the good old backup'))
      const again = byteSource(large, { chunkSize: 1 * MiB, failAfter: { bytes: interruptAt, error: new Error('source exploded again') } })
      await t.rejects(driver.put(keep, again.stream), { code: 'UPLOAD_FAILED' }, 'failed overwrite rejects')
      t.equal((await readAll(await driver.get(keep))).toString(), 'the good old backup', 'a failed overwrite leaves the previous object intact')
      if (options.leftovers !== undefined) t.same(await options.leftovers(), [], 'no temporary leftovers')
      await driver.delete(keep)
    })

    t.test('AbortSignal during put', async (t) => {
      const key = k('abort/mid.sql.gz')
      const ac = new AbortController()
      let abortedAt = 0
      const src = byteSource(large, {
        chunkSize: 1 * MiB,
        onProgress: (n) => { if (n >= interruptAt && !ac.signal.aborted) { abortedAt = performance.now(); ac.abort() } },
      })
      await t.rejects(driver.put(key, src.stream, { signal: ac.signal }), { name: 'AbortError' }, 'put rejects with an AbortError')
      const latency = performance.now() - abortedAt
      t.ok(abortedAt > 0 && latency < 5000, `put settled ${Math.round(latency)} ms after the abort`)
      t.ok(src.stream.destroyed, 'the source stream was destroyed')
      t.ok(src.emitted() < large, 'reading stopped before the end')
      await assertNothingLeft(t, key, 'aborted put', true)

      const early = k('abort/early.sql.gz')
      const ac2 = new AbortController()
      ac2.abort(new CloudPilotError('CANCELLED'))
      const src2 = byteSource(1 * MiB)
      await t.rejects(driver.put(early, src2.stream, { signal: ac2.signal }), { name: 'AbortError' }, 'an already aborted signal (any reason) rejects with an AbortError')
      t.ok(src2.stream.destroyed, 'and destroys the source')
      await assertNothingLeft(t, early, 'put with an aborted signal', false)

      const keep = k('abort/existing.sql.gz')
      await driver.put(keep, small('the good old backup'))
      const ac3 = new AbortController()
      const src3 = byteSource(large, { chunkSize: 1 * MiB, onProgress: (n) => { if (n >= interruptAt) ac3.abort() } })
      await t.rejects(driver.put(keep, src3.stream, { signal: ac3.signal }), { name: 'AbortError' }, 'aborted overwrite rejects')
      t.equal((await readAll(await driver.get(keep))).toString(), 'the good old backup', 'an aborted overwrite leaves the previous object intact')
      await driver.delete(keep)
    })

    t.test('AbortSignal on get, stat, list, delete', async (t) => {
      const key = k('abort-get/object.bin')
      await driver.put(key, byteSource(12 * MiB).stream)
      const ac = new AbortController()
      const stream = await driver.get(key, { signal: ac.signal })
      let read = 0
      await t.rejects((async () => {
        for await (const chunk of stream) {
          read += (chunk as Buffer).length
          if (read >= 1 * MiB) ac.abort()
        }
      })(), { name: 'AbortError' }, 'reading the stream fails with an AbortError once aborted')
      t.ok(read < 12 * MiB, 'the rest was not read')
      t.ok(stream.destroyed, 'the stream is destroyed')

      const aborted = AbortSignal.abort()
      await t.rejects(driver.get(key, { signal: aborted }), { name: 'AbortError' }, 'get with an aborted signal')
      await t.rejects(driver.stat(key, { signal: aborted }), { name: 'AbortError' }, 'stat with an aborted signal')
      await t.rejects(driver.list(k('abort-get/'), { signal: aborted }), { name: 'AbortError' }, 'list with an aborted signal')
      await t.rejects(driver.delete(key, { signal: aborted }), { name: 'AbortError' }, 'delete with an aborted signal')
      t.equal((await driver.stat(key))?.sizeBytes, 12 * MiB, 'the aborted delete deleted nothing')
      await driver.delete(key)
    })

    t.test('missing keys', async (t) => {
      await t.rejects(driver.get(k('missing/nothing.sql.gz')), { code: 'OBJECT_NOT_FOUND' }, 'get rejects OBJECT_NOT_FOUND')
      t.equal(await driver.stat(k('missing/nothing.sql.gz')), null, 'stat is null')
    })

    t.test('key validation', async (t) => {
      const bad = ['../x', `${run}/../../x`, '/etc/passwd', 'a//b', '', './a', 'a/./b', 'a\\b', 'a\u0000b', 'x'.repeat(1025), 'trailing/']
      for (const key of bad) {
        const label = JSON.stringify(key.length > 40 ? key.slice(0, 20) + '…' : key)
        const src = byteSource(1000)
        await t.rejects(driver.put(key, src.stream), { code: 'VALIDATION_FAILED' }, `put ${label}`)
        t.equal(src.emitted(), 0, `put ${label} read nothing`)
        await t.rejects(driver.get(key), { code: 'VALIDATION_FAILED' }, `get ${label}`)
        await t.rejects(driver.stat(key), { code: 'VALIDATION_FAILED' }, `stat ${label}`)
        await t.rejects(driver.delete(key), { code: 'VALIDATION_FAILED' }, `delete ${label}`)
      }
      t.equal(await driver.stat('x'), null, 'nothing was written as "x" by the refused "../x"')
    })

    t.test('test(): probe round trip', async (t) => {
      const result = await driver.test()
      t.type(result.latencyMs, 'number')
      t.ok(Number.isFinite(result.latencyMs) && result.latencyMs >= 0, `latencyMs ${result.latencyMs}`)
      const left = (await listAll(driver, '')).items.filter((i) => i.key.includes('cloudpilot-probe'))
      t.same(left, [], 'the probe object was deleted')
    })

    t.test('everything this suite wrote is gone', async (t) => {
      t.same((await listAll(driver, `${run}/`)).items.map((i) => i.key), [], 'no objects left under the run prefix')
      if (options.leftovers !== undefined) t.same(await options.leftovers(), [], 'no temporary leftovers')
    })
  })
}
