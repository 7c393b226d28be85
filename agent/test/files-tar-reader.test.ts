import t from 'tap'
import { appendFile, mkdir, opendir, readFile, symlink, truncate, utimes, writeFile } from 'node:fs/promises'
import { Readable } from 'node:stream'
import path from 'node:path'
import tar, { type Header } from 'tar-stream'
import { encodeHeader, headerBytes, type TarHeader } from '../src/sources/tar-header.ts'
import { FilesTarReader, TAR_CHUNK_BYTES } from '../src/sources/files-tar-reader.ts'
import { excludeMatcher, normalisePaths } from '../src/sources/files-archive.ts'
import { run, tempDir } from './helpers/backup-fixtures.ts'

/** The bytes tar-stream's pack writes for one header-only entry (its header blocks, without the end of archive). */
async function tarStreamHeader (header: TarHeader): Promise<Buffer> {
  const pack = tar.pack()
  const h: Partial<Header> & Pick<Header, 'name'> = { name: header.name, type: header.type, mode: header.mode, uid: header.uid, gid: header.gid, mtime: new Date(header.mtime * 1000), size: 0 }
  if (header.linkname !== undefined) h.linkname = header.linkname
  if (header.devmajor !== undefined) h.devmajor = header.devmajor
  if (header.devminor !== undefined) h.devminor = header.devminor
  if (header.pax !== undefined) h.pax = header.pax
  if (header.type === 'file') pack.entry(h, Buffer.alloc(0))
  else pack.entry(h)
  pack.finalize()
  const chunks: Buffer[] = []
  for await (const chunk of pack) chunks.push(chunk as Buffer)
  const all = Buffer.concat(chunks)
  return all.subarray(0, all.length - 1024)
}

t.test('tar headers are byte for byte those of tar-stream (ustar, pax for long, unicode and out-of-range values)', async (t) => {
  const base = { mode: 0o644, uid: 1000, gid: 1000, mtime: 1_700_000_000, size: 0 }
  const long = 'segment-of-a-long-path/'.repeat(12)
  const cases: TarHeader[] = [
    { ...base, name: 'var/www/index.html', type: 'file' },
    { ...base, name: 'var/www/', type: 'directory', mode: 0o755 },
    { ...base, name: `${long}file.txt`, type: 'file' },
    { ...base, name: `${'x'.repeat(120)}/name`, type: 'file' },
    { ...base, name: 'var/Grüße 日本語 🚀.txt', type: 'file' },
    { ...base, name: 'var/link', type: 'symlink', linkname: '../target' },
    { ...base, name: 'var/long-link', type: 'symlink', linkname: `/${long}` },
    { ...base, name: 'var/hard', type: 'link', linkname: 'var/www/index.html' },
    { ...base, name: 'dev/null', type: 'character-device', devmajor: 1, devminor: 3 },
    { ...base, name: 'var/fifo', type: 'fifo' },
    { ...base, name: 'var/big-ids', type: 'file', uid: 0, gid: 0, pax: { uid: '4294967294', gid: '3000000' } },
    { ...base, name: 'var/old', type: 'file', mtime: 0, pax: { mtime: '-86400' } },
  ]
  for (const header of cases) {
    const out = Buffer.alloc(headerBytes(header))
    const end = encodeHeader(header, out, 0)
    t.equal(end, out.length, `${header.name}: length`)
    t.same(out, await tarStreamHeader(header), `${header.name}: same bytes`)
  }
})

async function readAll (reader: Readable): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of reader) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

async function entries (archive: Buffer): Promise<Array<{ name: string, type: string, size: number, body: Buffer }>> {
  const extract = tar.extract()
  const out: Array<{ name: string, type: string, size: number, body: Buffer }> = []
  const feeding = (async () => { extract.end(archive) })()
  for await (const entry of extract) {
    const parts: Buffer[] = []
    for await (const chunk of entry) parts.push(chunk as Buffer)
    out.push({ name: entry.header.name, type: entry.header.type ?? 'file', size: entry.header.size ?? 0, body: Buffer.concat(parts) })
  }
  await feeding
  return out
}

function reader (paths: string[], warnings: string[] = [], exclude: string[] = []): FilesTarReader {
  return new FilesTarReader({
    roots: normalisePaths(paths),
    excluded: excludeMatcher(exclude),
    signal: new AbortController().signal,
    warn: (message, p) => { warnings.push(`${message}: ${p}`) },
  })
}

t.test('entries come in walk order (roots in order, directory order, depth first) across many chunks', async (t) => {
  const base = await tempDir(t)
  const root = path.join(base, 'tree')
  const expected: string[] = []
  for (let d = 0; d < 5; d++) {
    await mkdir(path.join(root, `d${d}`, 'inner'), { recursive: true })
    for (let f = 0; f < 200; f++) await writeFile(path.join(root, `d${d}`, `f${f}.txt`), `file ${d}/${f} `.repeat(f * 7))
    await writeFile(path.join(root, `d${d}`, 'inner', 'deep.txt'), 'deep')
  }
  // What a sequential depth-first walk in directory order (opendir, unsorted) yields.
  const walk = async (dir: string): Promise<void> => {
    expected.push(dir.slice(1) + '/')
    for await (const dirent of await opendir(dir)) {
      const p = path.join(dir, dirent.name)
      if (dirent.isDirectory()) await walk(p)
      else expected.push(p.slice(1))
    }
  }
  await walk(root)
  const archive = await readAll(reader([root]))
  t.ok(archive.length > 2 * TAR_CHUNK_BYTES, 'spans several chunks')
  const got = await entries(archive)
  t.same(got.map((e) => e.name), expected, 'same entries, same order')
  for (const e of got.filter((x) => x.type === 'file' && x.name.endsWith('.txt') && !x.name.endsWith('deep.txt'))) {
    const f = Number(/f(\d+)\.txt$/.exec(e.name)?.[1])
    const d = /\/d(\d)\//.exec('/' + e.name)?.[1]
    if (e.body.toString() !== `file ${d}/${f} `.repeat(f * 7)) { t.fail(`content of ${e.name}`); return }
  }
  t.equal(await run('tar', ['-tf', '-'], { input: archive }).then((s) => s.split('\n').filter((l) => l !== '').length), expected.length, 'GNU tar lists the same entries')
})

t.test('a file that shrinks while it is read is padded with zeros (warning); one that grows is cut at its size', async (t) => {
  const base = await tempDir(t)
  const size = 8 * TAR_CHUNK_BYTES
  const content = Buffer.alloc(size, 'a')
  const shrinks = path.join(base, '1-shrinks.bin')
  const grows = path.join(base, '2-grows.bin')
  const after = path.join(base, '3-after.txt')
  await writeFile(shrinks, content)
  await writeFile(grows, content)
  await writeFile(after, 'after')
  await symlink('3-after.txt', path.join(base, '4-link'))
  const warnings: string[] = []
  // Roots are archived in (sorted) order, one file at a time, and the reader runs at most two chunks ahead of
  // its consumer: after chunk 1 the first file is being read, after chunk 12 the second.
  const r = reader([shrinks, grows, after, path.join(base, '4-link')], warnings)
  const chunks: Buffer[] = []
  for await (const chunk of r) {
    chunks.push(chunk as Buffer)
    if (chunks.length === 1) await truncate(shrinks, 100)
    if (chunks.length === 12) await appendFile(grows, Buffer.alloc(TAR_CHUNK_BYTES, 'b'))
  }
  const got = await entries(Buffer.concat(chunks))
  t.same(got.map((e) => path.basename(e.name)), ['1-shrinks.bin', '2-grows.bin', '3-after.txt', '4-link'], 'every entry, in order')
  const shrunk = got.find((e) => e.name.endsWith('1-shrinks.bin'))?.body ?? Buffer.alloc(0)
  t.equal(shrunk.length, size, 'the entry keeps the size lstat saw')
  const firstZero = shrunk.indexOf(0)
  t.ok(firstZero >= 100 && firstZero < size, 'what was read is kept, then zeros')
  t.ok(shrunk.subarray(0, firstZero).every((b) => b === 0x61) && shrunk.subarray(firstZero).every((b) => b === 0), 'content then only zeros')
  t.match(warnings, [/file shrank by \d+ bytes while being read; padded with zeros: .*1-shrinks\.bin/])
  t.equal(warnings.length, 1, 'one warning')
  const grown = got.find((e) => e.name.endsWith('2-grows.bin'))?.body ?? Buffer.alloc(0)
  t.equal(grown.length, size, 'a grown file is cut at the size lstat saw')
  t.ok(grown.every((b) => b === 0x61), 'with the bytes it had')
  t.equal(got.find((e) => e.name.endsWith('3-after.txt'))?.body.toString(), 'after', 'entries after them are intact')
  t.equal(await readFile(after, 'utf8'), 'after')
})

t.test('modes and mtimes come from lstat; an all-excluded source fails with SOURCE_NOT_FOUND', async (t) => {
  const base = await tempDir(t)
  const file = path.join(base, 'f.txt')
  await writeFile(file, 'x', { mode: 0o640 })
  await utimes(file, new Date('2020-01-02T03:04:05Z'), new Date('2020-01-02T03:04:05Z'))
  const archive = await readAll(reader([file]))
  const extract = tar.extract()
  extract.end(archive)
  for await (const entry of extract) {
    t.equal(entry.header.mode, 0o640)
    t.equal(entry.header.mtime?.toISOString(), '2020-01-02T03:04:05.000Z')
    entry.resume()
  }
  await t.rejects(readAll(reader([file], [], ['*.txt'])), { code: 'SOURCE_NOT_FOUND', message: /Nothing to archive/ })
})
