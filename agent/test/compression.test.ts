import t from 'tap'
import { mkdir, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { spawnSync } from 'node:child_process'
import { createRunBackup } from '../src/backup/run-backup.ts'
import { findTool } from '../src/sources/tool-detect.ts'
import { backupContext, filesJob, tempDir } from './helpers/backup-fixtures.ts'

const pigzSkip = (await findTool('pigz')) === null ? 'pigz is not installed (apt-get install pigz); the zlib fallback is tested below' : false

function decompressed (file: string): Buffer {
  const tool = file.endsWith('.zst') ? ['zstd', '-dc'] : file.endsWith('.gz') ? ['gzip', '-dc'] : ['cat']
  const res = spawnSync(tool[0] as string, [...tool.slice(1), file], { maxBuffer: 512 * 1024 * 1024 })
  if (res.status !== 0) throw new Error(`${tool.join(' ')} failed: ${String(res.stderr)}`)
  return res.stdout
}

async function tree (t: Parameters<typeof tempDir>[0]): Promise<string> {
  const dir = await tempDir(t)
  await mkdir(path.join(dir, 'data'))
  for (let i = 0; i < 20; i++) await writeFile(path.join(dir, 'data', `f${i}.txt`), `line ${i}\n`.repeat(20000 + i))
  return dir
}

const variants: Array<{ name: string, compression: 'gzip' | 'zstd' | 'none', pigz: boolean, ext: string, tool: string | null, skip: string | false }> = [
  { name: 'gzip through pigz', compression: 'gzip', pigz: true, ext: '.tar.gz', tool: 'pigz', skip: pigzSkip },
  { name: 'gzip through node:zlib (no pigz)', compression: 'gzip', pigz: false, ext: '.tar.gz', tool: 'zlib', skip: false },
  { name: 'zstd through node:zlib', compression: 'zstd', pigz: false, ext: '.tar.zst', tool: 'zstd', skip: false },
  { name: 'none', compression: 'none', pigz: false, ext: '.tar', tool: null, skip: false },
]

for (const v of variants) {
  t.test(`${v.name}: a standard archive the stock CLI decompresses`, { skip: v.skip }, async (t) => {
    const src = await tree(t)
    const ctx = await backupContext(t)
    const result = await createRunBackup({ pigz: v.pigz })(filesJob({ paths: [src] }, { keepLocal: true, compression: v.compression }), ctx)
    const file = result.localPath as string
    t.ok(file.endsWith(v.ext), file)
    const raw = decompressed(file)
    t.equal(raw.length, result.manifest.rawBytes, 'decompressed size equals the raw bytes counted')
    if (v.compression !== 'none') t.ok(result.sizeBytes < raw.length / 5, 'compressed')
    else t.equal(result.sizeBytes, raw.length)
    if (v.tool !== null) t.ok(result.manifest.tools[v.tool], `manifest names ${v.tool}`)
    const listing = spawnSync('tar', ['-tf', '-'], { input: raw, encoding: 'utf8' })
    t.equal(listing.status, 0)
    t.equal(listing.stdout.split('\n').filter((l) => l.endsWith('.txt')).length, 20)
  })
}
