import t from 'tap'
import { readFile, readdir, stat, writeFile, mkdir } from 'node:fs/promises'
import path from 'node:path'
import { manifestKey } from '@cloudpilot/protocol'
import { createRunBackup } from '../src/backup/run-backup.ts'
import { backupContext, filesJob, localDestination, run, tempDir } from './helpers/backup-fixtures.ts'

const runBackup = createRunBackup({ progressIntervalMs: 50 })

async function sourceTree (t: Parameters<typeof tempDir>[0]): Promise<string> {
  const dir = await tempDir(t)
  await mkdir(path.join(dir, 'd'))
  for (let i = 0; i < 40; i++) await writeFile(path.join(dir, 'd', `f${i}`), Buffer.alloc(256 * 1024, i))
  return dir
}

t.test('sha256 and size in the result are those of the stored object and the local copy', async (t) => {
  const src = await sourceTree(t)
  const dest = await tempDir(t)
  const ctx = await backupContext(t)
  const job = filesJob({ paths: [src] }, { destination: localDestination(dest), keepLocal: true })
  const result = await runBackup(job, ctx)

  const object = path.join(dest, job.objectKey)
  const [objectSum] = (await run('sha256sum', [object])).split(' ')
  const [localSum] = (await run('sha256sum', [result.localPath as string])).split(' ')
  t.equal(result.sha256, objectSum, 'sha256 equals sha256sum of the stored object')
  t.equal(result.sha256, localSum, 'and of the local copy')
  t.equal(result.sizeBytes, (await stat(object)).size)
  t.equal(result.sizeBytes, (await stat(result.localPath as string)).size)
  t.equal((await stat(result.localPath as string)).mode & 0o777, 0o600, 'local copy is private')
  t.equal((await stat(ctx.spoolDir)).mode & 0o777, 0o700, 'spool directory is private')
  t.equal(path.basename(result.localPath as string), `${job.jobId}.tar.gz`)

  const remoteManifest = JSON.parse(await readFile(path.join(dest, manifestKey(job.objectKey)), 'utf8'))
  const localManifest = JSON.parse(await readFile(`${result.localPath as string}.manifest.json`, 'utf8'))
  t.same(remoteManifest, result.manifest, 'manifest beside the object')
  t.same(localManifest, result.manifest, 'manifest beside the local copy')
  t.match(result.manifest, {
    format: 'cloudpilot-backup-manifest/1', backupId: job.jobId, planId: job.planId, serverId: job.serverId,
    type: 'files', engine: null, compression: 'gzip', encrypted: false, sizeBytes: result.sizeBytes, sha256: objectSum,
    fileName: path.posix.basename(job.objectKey),
  })
  t.ok(result.manifest.rawBytes >= 40 * 256 * 1024, 'raw (tar) bytes counted')
  t.ok(Date.parse(result.manifest.finishedAt) >= Date.parse(result.manifest.createdAt))

  // Only the archive and its manifest under the destination: no part files left behind.
  const files = await run('find', [dest, '-type', 'f'])
  t.same(files.trim().split('\n').map((f) => path.basename(f)).sort(), [path.basename(job.objectKey), path.basename(manifestKey(job.objectKey))].sort())
  t.same((await readdir(ctx.spoolDir)).sort(), [`${job.jobId}.tar.gz`, `${job.jobId}.tar.gz.manifest.json`])

  const last = ctx.progress.at(-1)
  t.equal(last?.bytes, result.sizeBytes, 'the last progress report carries the final size')
  t.ok(ctx.progress.every((p, i) => i === 0 || p.bytes >= (ctx.progress[i - 1]?.bytes ?? 0)), 'progress only grows')
})

t.test('without a destination no object is written; without keepLocal no spool file', async (t) => {
  const src = await sourceTree(t)
  const ctx = await backupContext(t)
  const result = await runBackup(filesJob({ paths: [src] }, { keepLocal: true }), ctx)
  t.equal(result.objectKey, null)
  t.equal(result.offsiteStatus, null)

  const dest = await tempDir(t)
  const ctx2 = await backupContext(t)
  const result2 = await runBackup(filesJob({ paths: [src] }, { destination: localDestination(dest) }), ctx2)
  t.equal(result2.localPath, null)
  await t.rejects(readdir(ctx2.spoolDir), { code: 'ENOENT' }, 'the spool directory was never touched')
})

t.test('a job asking for encryption fails closed and writes nothing', async (t) => {
  const src = await sourceTree(t)
  const dest = await tempDir(t)
  const ctx = await backupContext(t)
  const job = filesJob({ paths: [src] }, { destination: localDestination(dest), keepLocal: true, encryption: { recipient: 'age1' + 'q'.repeat(58) } })
  await t.rejects(runBackup(job, ctx), { code: 'ENCRYPTION_UNAVAILABLE' })
  t.same(await readdir(dest), [])
  await t.rejects(readdir(ctx.spoolDir), { code: 'ENOENT' })
})

t.test('snapshot backups are UNSUPPORTED for now; a full backup needs a full source', async (t) => {
  const ctx = await backupContext(t)
  await t.rejects(runBackup({ ...filesJob({ paths: ['/tmp'] }, { keepLocal: true }), type: 'snapshot', source: { provider: 'x' } }, ctx), { code: 'UNSUPPORTED' })
  await t.rejects(runBackup({ ...filesJob({ paths: ['/tmp'] }, { keepLocal: true }), type: 'full' }, ctx), { code: 'VALIDATION_FAILED' })
})
