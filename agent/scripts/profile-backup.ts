/**
 * Runs one backup in this process, the way the agent runs it, and prints wall time and peak RSS: for profiling
 * (`npx node --cpu-prof agent/scripts/profile-backup.ts ...`) and for comparing with the shell pipeline.
 *
 *   npx node agent/scripts/profile-backup.ts files <path> <destDir> [--no-pigz] [--keep-local]
 *   npx node agent/scripts/profile-backup.ts postgresql <database> <destDir> [--no-pigz]
 *   npx node agent/scripts/profile-backup.ts mysql <database> <destDir> [--no-pigz]
 *
 * Databases are reached as postgres@127.0.0.1:5432 / root@127.0.0.1:3306 (the project's test machines).
 * S3_DESTINATION=<file> sends the archive to S3 instead of <destDir>: the file holds the JSON line that
 * bench/lib/s3-emulator-process.ts prints (endpoint, bucket, region, accessKeyId, secretAccessKey).
 * MEM_TRACE=1 prints process.memoryUsage() every 500 ms to stderr.
 */
import { randomUUID } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import pino from 'pino'
import { archiveExtension, backupObjectKey, type BackupJob } from '@cloudpilot/protocol'
import { openDestination } from '@cloudpilot/storage'
import { createRunBackup } from '../src/backup/run-backup.ts'

const [kind, target, destDir] = process.argv.slice(2)
const flags = new Set(process.argv.slice(5))
if (kind === undefined || target === undefined || destDir === undefined) {
  console.error('usage: profile-backup.ts files|postgresql|mysql <path|database> <destDir> [--no-pigz] [--keep-local]')
  process.exit(2)
}
const type = kind === 'files' ? 'files' : 'database'
const source: BackupJob['source'] = kind === 'files'
  ? { paths: [target], exclude: [] }
  : kind === 'postgresql'
    ? { engine: 'postgresql', host: '127.0.0.1', port: 5432, username: 'postgres', databases: [target] }
    : { engine: 'mysql', host: '127.0.0.1', port: 3306, username: 'root', databases: [target] }
const jobId = randomUUID()
const serverId = randomUUID()
const planId = randomUUID()
const createdAt = new Date()
const s3 = process.env.S3_DESTINATION === undefined
  ? null
  : JSON.parse(await readFile(process.env.S3_DESTINATION, 'utf8')) as { endpoint: string, bucket: string, region: string, accessKeyId: string, secretAccessKey: string }
const destination: BackupJob['destination'] = s3 === null
  ? { id: randomUUID(), type: 'local', config: { path: destDir }, credentials: {} }
  : { id: randomUUID(), type: 's3', config: { bucket: s3.bucket, region: s3.region, endpoint: s3.endpoint, forcePathStyle: true }, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } }
const job: BackupJob = {
  kind: 'backup', jobId, planId, serverId, type, source, compression: 'gzip', encryption: null,
  keepLocal: flags.has('--keep-local'),
  destination,
  objectKey: backupObjectKey({ serverId, planId, backupId: jobId, createdAt, extension: archiveExtension(type, 'gzip', false) }),
  timeoutSeconds: 3600, createdAt: createdAt.toISOString(),
}
const spool = await mkdtemp(path.join(tmpdir(), 'cp-profile-spool-'))
const started = performance.now()
const sampler = process.env.MEM_TRACE === undefined ? null : setInterval(() => {
  const m = process.memoryUsage()
  const mb = (n: number): number => Math.round(n / 1048576)
  // RssAnon is the heap, buffers and malloc arenas; RssFile is mostly the pages of the node binary in use.
  const status = readFileSync('/proc/self/status', 'utf8')
  const kb = (field: string): number => Math.round(Number(new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? 0) / 1024)
  console.error(`t=${((performance.now() - started) / 1000).toFixed(1)} rss=${mb(m.rss)} anon=${kb('RssAnon')} file=${kb('RssFile')} heapTotal=${mb(m.heapTotal)} heapUsed=${mb(m.heapUsed)} external=${mb(m.external)} arrayBuffers=${mb(m.arrayBuffers)}`)
}, 500)
try {
  const result = await createRunBackup({ pigz: !flags.has('--no-pigz') })(job, {
    signal: new AbortController().signal,
    log: pino({ level: process.env.LOG_LEVEL ?? 'silent' }),
    spoolDir: spool,
    onProgress () {},
    onOffsiteStatus () {},
    openDestination: async (d) => await openDestination(d, { allowPrivateEndpoints: s3 !== null }),
  })
  const seconds = (performance.now() - started) / 1000
  console.log(JSON.stringify({ seconds: Number(seconds.toFixed(3)), maxRssMB: Math.round(process.resourceUsage().maxRSS / 1024), sizeBytes: result.sizeBytes, rawBytes: result.manifest.rawBytes, file: s3 === null ? path.join(destDir, job.objectKey) : `s3://${s3.bucket}/${job.objectKey}` }))
} finally {
  if (sampler !== null) clearInterval(sampler)
  await rm(spool, { recursive: true, force: true })
}
