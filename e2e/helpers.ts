import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { createWriteStream } from 'node:fs'
import { pipeline } from 'node:stream/promises'
import { Readable } from 'node:stream'
import type { Test } from 'tap'
import { startS3rver, type S3rverHandle } from '../storage/test/helpers/s3rver.ts'
import type { CoordinatorProcess } from '../coordinator/test/helpers/processes.ts'

export async function s3(t: Test): Promise<S3rverHandle> {
  const s = await startS3rver()
  t.teardown(async () => { await s.close() })
  return s
}

export async function createS3Destination (coordinator: CoordinatorProcess, s: S3rverHandle, overrides: { config?: Record<string, unknown>, credentials?: Record<string, unknown> } = {}): Promise<string> {
  const r = await coordinator.api.post('/api/v1/destinations', {
    name: `s3 ${Math.random().toString(36).slice(2, 6)}`,
    type: 's3',
    config: { bucket: s.bucket, region: s.region, endpoint: s.endpoint, forcePathStyle: true, ...overrides.config },
    credentials: { accessKeyId: s.accessKeyId, secretAccessKey: s.secretAccessKey, ...overrides.credentials },
  })
  if (r.status !== 201) throw new Error(`destination: ${r.status} ${JSON.stringify(r.body)}`)
  return r.body.id as string
}

export async function createPlan (coordinator: CoordinatorProcess, body: Record<string, unknown>): Promise<string> {
  const r = await coordinator.api.post('/api/v1/plans', { name: `plan ${Math.random().toString(36).slice(2, 6)}`, ...body })
  if (r.status !== 201) throw new Error(`plan: ${r.status} ${JSON.stringify(r.body)}`)
  return r.body.id as string
}

/** Downloads a backup to a file; returns its sha256 and the response headers. */
export async function downloadBackup (coordinator: CoordinatorProcess, backupId: string, file: string): Promise<{ sha256: string, status: number, headers: Headers, bytes: number }> {
  const res = await coordinator.api.raw(`/api/v1/backups/${backupId}/download`)
  if (!res.ok || res.body === null) return { sha256: '', status: res.status, headers: res.headers, bytes: 0 }
  const hash = createHash('sha256')
  let bytes = 0
  const body = Readable.fromWeb(res.body as import('node:stream/web').ReadableStream)
  body.on('data', (c: Buffer) => { hash.update(c); bytes += c.length })
  await pipeline(body, createWriteStream(file))
  return { sha256: hash.digest('hex'), status: res.status, headers: res.headers, bytes }
}

/** Runs `gunzip -c file | <cmd args>` with the stock tools, as a user restoring by hand would. */
export async function gunzipInto (file: string, cmd: string, args: string[]): Promise<{ code: number | null, stderr: string }> {
  const gunzip = spawn('gunzip', ['-c', file], { stdio: ['ignore', 'pipe', 'pipe'] })
  const client = spawn(cmd, args, { stdio: ['pipe', 'ignore', 'pipe'] })
  let stderr = ''
  client.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  gunzip.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  gunzip.stdout.pipe(client.stdin)
  const code = await new Promise<number | null>((resolve) => client.once('close', resolve))
  return { code, stderr }
}

export async function run (cmd: string, args: string[]): Promise<{ code: number | null, stdout: string, stderr: string }> {
  const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  p.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
  p.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const code = await new Promise<number | null>((resolve) => p.once('close', resolve))
  return { code, stdout, stderr }
}

/** Polls a backup row and records every distinct (status, offsiteStatus) seen, plus whether progress showed up. */
export async function watchBackup (coordinator: CoordinatorProcess, backupId: string, timeoutMs = 120_000): Promise<{ final: any, statuses: string[], offsite: Array<string | null>, sawProgress: boolean }> {
  const statuses: string[] = []
  const offsite: Array<string | null> = []
  let sawProgress = false
  const until = Date.now() + timeoutMs
  for (;;) {
    const r = await coordinator.api.get(`/api/v1/backups/${backupId}`)
    const b = r.body
    if (statuses.at(-1) !== b.status) statuses.push(b.status)
    if (offsite.at(-1) !== b.offsiteStatus) offsite.push(b.offsiteStatus)
    if (b.progress !== null && b.progress.bytes > 0) sawProgress = true
    if (['completed', 'failed', 'cancelled'].includes(b.status)) return { final: b, statuses, offsite, sawProgress }
    if (Date.now() > until) throw new Error(`backup ${backupId} still ${b.status} after ${timeoutMs} ms`)
    await new Promise((resolve) => setTimeout(resolve, 40))
  }
}

/** Runs a plan and waits for its backup to finish; fails the test's expectations loudly when it did not complete. */
export async function completedBackup (coordinator: CoordinatorProcess, planId: string, timeoutMs?: number): Promise<any> {
  const run = await coordinator.api.post(`/api/v1/plans/${planId}/run`)
  if (run.status !== 201) throw new Error(`run: ${run.status} ${JSON.stringify(run.body)}`)
  const { final } = await watchBackup(coordinator, run.body.id, timeoutMs)
  if (final.status !== 'completed') throw new Error(`backup ${final.id} ${final.status}: ${JSON.stringify(final.error)}`)
  return final
}

/** Polls a restore and records every distinct status and progress phase seen, until it is terminal. */
export async function watchRestore (coordinator: CoordinatorProcess, restoreId: string, timeoutMs = 120_000): Promise<{ final: any, statuses: string[], phases: string[], sawProgress: boolean }> {
  const statuses: string[] = []
  const phases: string[] = []
  let sawProgress = false
  const until = Date.now() + timeoutMs
  for (;;) {
    const r = await coordinator.api.get(`/api/v1/restores/${restoreId}`)
    if (r.status !== 200) throw new Error(`GET restore: ${r.status} ${JSON.stringify(r.body)}`)
    const b = r.body
    if (statuses.at(-1) !== b.status) statuses.push(b.status)
    if (b.progress !== null) {
      if (b.progress.bytes > 0) sawProgress = true
      if (b.progress.phase !== undefined && phases.at(-1) !== b.progress.phase) phases.push(b.progress.phase)
    }
    if (['completed', 'failed', 'cancelled'].includes(b.status)) return { final: b, statuses, phases, sawProgress }
    if (Date.now() > until) throw new Error(`restore ${restoreId} still ${b.status} after ${timeoutMs} ms`)
    await new Promise((resolve) => setTimeout(resolve, 40))
  }
}

/** POST /backups/:id/restore and wait for the restore to finish. */
export async function restore (coordinator: CoordinatorProcess, backupId: string, body: Record<string, unknown>): Promise<any> {
  const r = await coordinator.api.post(`/api/v1/backups/${backupId}/restore`, body)
  if (r.status !== 201) throw new Error(`restore: ${r.status} ${JSON.stringify(r.body)}`)
  return (await watchRestore(coordinator, r.body.id)).final
}
