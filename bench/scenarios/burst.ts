/**
 * Scenario 6: the schedule burst of coordinator/scripts/measure-schedule-burst.ts (N plans firing in the same
 * slot through node-cron's real timers, an in-process coordinator on a fresh PostgreSQL database), run as its
 * own process: time from the slot until no row is pending, and whether any plan slot got two rows.
 */
import { spawn } from 'node:child_process'
import path from 'node:path'
import type { Flags } from '../lib/flags.ts'
import type { ScenarioResult } from '../lib/result.ts'
import { onCleanup } from '../lib/cleanup.ts'
import { ROOT, exited, stopProcess } from '../lib/services.ts'
import { startSampler } from '../lib/sampler.ts'
import { MB } from '../lib/stats.ts'
import { cpu } from '../lib/proc.ts'

export async function burst (flags: Flags): Promise<ScenarioResult> {
  const n = flags.burstPlans
  process.stderr.write(`[burst] ${n} plans due in the same slot (coordinator/scripts/measure-schedule-burst.ts)\n`)
  const env = { ...process.env }
  delete env.NODE_OPTIONS
  const cpuBefore = await cpu('self')
  const proc = spawn(process.execPath, [path.join(ROOT, 'coordinator/scripts/measure-schedule-burst.ts'), String(n)], { env, stdio: ['ignore', 'pipe', 'pipe'] })
  onCleanup('schedule burst', async () => { await stopProcess(proc) })
  let out = ''
  proc.stdout.on('data', (d: Buffer) => { out += d.toString(); process.stderr.write(`  ${d.toString()}`) })
  proc.stderr.on('data', (d: Buffer) => { out += d.toString() })
  const sampler = await startSampler(proc.pid as number, { children: false, everyMs: 250 })
  const code = await exited(proc)
  const sample = await sampler.stop().catch(() => null)
  const cpuAfter = await cpu('self')
  // The process has exited: its CPU is what the benchmark's reaped-children time grew by.
  const cpuSeconds = cpuBefore === null || cpuAfter === null ? null : cpuAfter.children - cpuBefore.children
  const loaded = /(\d+) plans loaded \(node-cron tasks\) in (\d+) ms, rss (\d+) MB/.exec(out)
  const done = /: (\d+) rows \((\d+) distinct plan slots\) after (\d+) ms, none pending after (\d+) ms/.exec(out)
  if (code !== 0 || done === null) throw new Error(`measure-schedule-burst exited ${code}: ${out.slice(-2000)}`)
  const rows = Number(done[1])
  const slots = Number(done[2])
  const allRowsMs = Number(done[3])
  const dispatchedMs = Number(done[4])
  const duplicates = rows - slots
  const missed = [
    ...(dispatchedMs <= 10_000 ? [] : [`${(dispatchedMs / 1000).toFixed(1)} s > 10 s`]),
    ...(rows === n ? [] : [`${rows} rows for ${n} plans`]),
    ...(duplicates === 0 ? [] : [`${duplicates} plan slots ran twice`]),
  ]
  const met = missed.length > 0 ? false : n >= 10_000 ? true : null
  return {
    id: 'burst',
    label: `Schedule burst: ${n} plans in one slot`,
    measured: 'coordinator (in-process, PostgreSQL store) from the slot until no row is pending',
    seconds: null,
    comparisons: [],
    peakRssMb: sample === null ? null : Math.max(sample.peakRssBytes, sample.maxSampledRssBytes) / MB,
    cpuSeconds,
    target: 'all 10,000 dispatched within 10 s, none twice',
    met,
    missed,
    summary: `all ${rows} dispatched after ${(dispatchedMs / 1000).toFixed(1)} s; ${duplicates} twice`,
    verdict: `${rows} rows for ${slots} distinct plan slots (${duplicates} twice); all rows after ${(allRowsMs / 1000).toFixed(1)} s, none pending after ${(dispatchedMs / 1000).toFixed(1)} s`,
    notes: [
      'No agent is connected in this measurement, so each dispatched row ends failed AGENT_LOST: the same statements as a send, plus one update; the WebSocket send itself is not in it.',
      `Loading the plans into node-cron took ${loaded?.[2] ?? '?'} ms (before the slot, not counted).`,
      'Peak RSS and CPU are those of the whole measuring process (coordinator and the polling loop, from start to end).',
    ],
    extra: { plans: n, rows, distinctSlots: slots, duplicates, allRowsMs, dispatchedMs, loadMs: loaded === null ? null : Number(loaded[2]), output: out.trim().split('\n') },
  }
}
