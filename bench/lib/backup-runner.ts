/**
 * Interleaved repetitions of "ours" (a plan run on a real agent) against shell baselines: one warm-up of each,
 * then `reps` rounds of (each baseline, ours) so that the machine's noise falls on both alike.
 */
import { spawn } from 'node:child_process'
import { rm, stat } from 'node:fs/promises'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { createHash } from 'node:crypto'
import type { Agent, Coordinator } from './services.ts'
import { startSampler, type SampleResult } from './sampler.ts'
import { runShell, type ShellRun } from './shell.ts'
import { cpu } from './proc.ts'
import { stats, MB } from './stats.ts'
import type { Comparison } from './result.ts'

export interface Baseline {
  label: string
  /** Shell pipeline; `$OUT` is the output file. */
  command: string
  /** Runs before each repetition, not timed (e.g. createdb). */
  prepare?: () => Promise<void>
  /** Runs after each repetition, not timed. */
  reset?: () => Promise<void>
}

export interface OursRun {
  seconds: number
  /** CPU seconds of the other processes watched during the run (coordinator, S3 emulator). */
  otherCpu: Record<string, number>
  sample: SampleResult
  id: string
  body: any
}

export interface OursSpec {
  label: string
  /** Starts the job; answers the id to poll. */
  start: () => Promise<string>
  /** Polls the job; answers the final body once terminal, else undefined. */
  poll: (id: string) => Promise<any>
  prepare?: () => Promise<void>
  reset?: (run: OursRun) => Promise<void>
  /** Other processes whose CPU seconds during each run are recorded. */
  alsoWatch?: Array<{ label: string, pid: number }>
}

export interface Interleaved {
  ours: OursRun[]
  baselines: Array<{ baseline: Baseline, runs: Array<ShellRun & { outputBytes: number }> }>
}

function log (line: string): void {
  process.stderr.write(`  ${line}\n`)
}

async function runBaseline (b: Baseline, out: string): Promise<ShellRun & { outputBytes: number }> {
  await b.prepare?.()
  const r = await runShell(b.command.replaceAll('$OUT', JSON.stringify(out)))
  const outputBytes = (await stat(out).catch(() => null))?.size ?? 0
  await rm(out, { force: true })
  await b.reset?.()
  log(`${b.label}: ${r.seconds.toFixed(2)} s, cpu ${r.cpuSeconds.toFixed(2)} s, rss ${(r.peakRssBytes / MB).toFixed(0)} MB`)
  return { ...r, outputBytes }
}

async function runOurs (spec: OursSpec, agent: Agent, everyMs: number): Promise<OursRun> {
  await spec.prepare?.()
  const sampler = await startSampler(agent.proc.pid as number, { watchDir: agent.spoolDir })
  const others = await Promise.all((spec.alsoWatch ?? []).map(async (w) => ({ label: w.label, pid: w.pid, before: await cpu(w.pid) })))
  const started = performance.now()
  const id = await spec.start()
  let body: any
  for (;;) {
    body = await spec.poll(id)
    if (body !== undefined) break
    await new Promise((resolve) => setTimeout(resolve, everyMs))
  }
  const seconds = (performance.now() - started) / 1000
  const sample = await sampler.stop()
  const otherCpu: Record<string, number> = {}
  for (const o of others) {
    const after = await cpu(o.pid)
    otherCpu[o.label] = o.before === null || after === null ? NaN : after.self - o.before.self
  }
  if (body.status !== 'completed') throw new Error(`${spec.label}: ${id} ${body.status}: ${JSON.stringify(body.error)}`)
  const run = { seconds, otherCpu, sample, id, body }
  await spec.reset?.(run)
  log(`${spec.label}: ${seconds.toFixed(2)} s, agent peak rss ${(sample.peakRssBytes / MB).toFixed(0)} MB, cpu ${(sample.cpuSelf + sample.cpuChildren).toFixed(2)} s (agent ${sample.cpuSelf.toFixed(2)} + children ${sample.cpuChildren.toFixed(2)}), spool max ${sample.watchDirMaxBytes} B${Object.entries(otherCpu).map(([k, v]) => `, ${k} cpu ${v.toFixed(2)} s`).join('')}`)
  return run
}

export async function interleave (options: { agent: Agent, ours: OursSpec, baselines: Baseline[], reps: number, warmup: number, outFile: string, pollMs?: number }): Promise<Interleaved> {
  const everyMs = options.pollMs ?? 50
  for (let w = 0; w < options.warmup; w++) {
    log(`warm-up ${w + 1}/${options.warmup}`)
    for (const b of options.baselines) await runBaseline(b, options.outFile)
    await runOurs(options.ours, options.agent, everyMs)
  }
  const result: Interleaved = { ours: [], baselines: options.baselines.map((baseline) => ({ baseline, runs: [] })) }
  for (let i = 0; i < options.reps; i++) {
    log(`repetition ${i + 1}/${options.reps}`)
    for (const b of result.baselines) b.runs.push(await runBaseline(b.baseline, options.outFile))
    result.ours.push(await runOurs(options.ours, options.agent, everyMs))
  }
  return result
}

export function comparisons (r: Interleaved): Comparison[] {
  const ours = stats(r.ours.map((o) => o.seconds))
  return r.baselines.map(({ baseline, runs }) => {
    const s = stats(runs.map((x) => x.seconds))
    return {
      baseline: baseline.label,
      baselineSeconds: s,
      ratio: ours.median / s.median,
      pairedRatio: stats(runs.map((x, i) => (r.ours[i]?.seconds ?? NaN) / x.seconds)).median,
      minRatio: ours.min / s.min,
      baselinePeakRssMb: Math.max(...runs.map((x) => x.peakRssBytes)) / MB,
      baselineCpuSeconds: stats(runs.map((x) => x.cpuSeconds)).median,
      baselineOutputBytes: runs.at(-1)?.outputBytes ?? 0,
    }
  })
}

/** Downloads a backup through the coordinator and checks it with `gzip -t` and its sha256. */
export async function verifyGzip (coordinator: Coordinator, backup: { id: string, sha256: string }): Promise<{ gzipOk: boolean, sha256Ok: boolean, bytes: number }> {
  const res = await coordinator.api.raw(`/api/v1/backups/${backup.id}/download`)
  if (!res.ok || res.body === null) return { gzipOk: false, sha256Ok: false, bytes: 0 }
  const test = spawn('gzip', ['-t'], { stdio: ['pipe', 'ignore', 'inherit'] })
  const hash = createHash('sha256')
  let bytes = 0
  const body = Readable.fromWeb(res.body as import('node:stream/web').ReadableStream)
  body.on('data', (c: Buffer) => { hash.update(c); bytes += c.length })
  const code = new Promise<number | null>((resolve) => test.once('close', resolve))
  await pipeline(body, test.stdin)
  return { gzipOk: await code === 0, sha256Ok: hash.digest('hex') === backup.sha256, bytes }
}

/** Polls GET path until status is terminal. */
export function terminal (coordinator: Coordinator, path: (id: string) => string): (id: string) => Promise<any> {
  return async (id) => {
    const r = await coordinator.api.get(path(id))
    if (r.status !== 200) throw new Error(`GET ${path(id)}: ${r.status} ${JSON.stringify(r.body)}`)
    return ['completed', 'failed', 'cancelled'].includes(r.body.status) ? r.body : undefined
  }
}
