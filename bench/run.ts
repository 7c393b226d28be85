/**
 * `npm run bench`: the performance targets of DESIGN.md §9 measured on this machine, against what users run by
 * hand where there is such a thing. Generates its data, runs each scenario (warm-up, then interleaved
 * repetitions), prints a markdown table and writes bench/results.json. Not part of the test suite.
 *
 *   npm run bench -- --help
 */
import { execFileSync } from 'node:child_process'
import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { cleanupAll, cleanupMark, cleanupOnSignals, cleanupTo, onCleanup } from './lib/cleanup.ts'
import { parseFlags, USAGE, type Flags, type ScenarioId } from './lib/flags.ts'
import { preparePackagedAgent } from './lib/packaged-agent.ts'
import { markdownTable } from './lib/table.ts'
import type { ScenarioResult } from './lib/result.ts'
import { filesBackup, mysqlBackup, pgBackup, pgRestore, startBackupEnv, type BackupEnv, type PgBackupOutcome } from './scenarios/backups.ts'
import { fleet } from './scenarios/fleet.ts'
import { burst } from './scenarios/burst.ts'
import { idle } from './scenarios/idle.ts'

function sh (cmd: string, args: string[]): string {
  try { return execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim() } catch { return 'unknown' }
}

function machine (dir: string): Record<string, unknown> {
  const model = /Model name:\s*(.+)/.exec(sh('lscpu', []))?.[1]?.trim() ?? os.cpus()[0]?.model ?? 'unknown'
  return {
    cpu: `${os.availableParallelism()} cores, ${model}`,
    memoryGb: Math.round(os.totalmem() / 1024 ** 3),
    disk: sh('df', ['-h', '--output=source,fstype,size', dir]).split('\n').at(-1),
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    postgres: sh('psql', ['-h', '127.0.0.1', '-U', 'postgres', '-d', 'postgres', '-qAtXc', 'show server_version']),
    mariadb: sh('mariadb', ['-h', '127.0.0.1', '-u', 'root', '-N', '-B', '-e', 'select version()']),
    loadAverageAtStart: os.loadavg().map((l) => Number(l.toFixed(2))),
  }
}

function failed (id: ScenarioId, err: unknown): ScenarioResult {
  const message = err instanceof Error ? err.message : String(err)
  process.stderr.write(`[${id}] FAILED: ${err instanceof Error ? err.stack : message}\n`)
  return { id, label: id, measured: '', seconds: null, comparisons: [], peakRssMb: null, cpuSeconds: null, target: '', met: false, missed: ['did not complete'], summary: `FAILED: ${message.split('\n')[0]}`, verdict: `FAILED: ${message.split('\n')[0]}`, notes: [message], extra: {} }
}

async function main (flags: Flags): Promise<void> {
  const started = Date.now()
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'cp-bench-'))
  onCleanup(`remove ${tmp}`, async () => { await rm(tmp, { recursive: true, force: true }) })
  const results: ScenarioResult[] = []
  const wants = (id: ScenarioId): boolean => flags.only.includes(id)
  // Each scenario group's processes, databases and files go when the group ends; the temp root at the very end.
  const base = cleanupMark()
  const host = machine(tmp)
  process.stderr.write(`machine: ${JSON.stringify(host)}\nscenarios: ${flags.only.join(', ')}\n`)
  if (flags.agentBin === null && flags.agent === 'package' && flags.only.some((id) => id !== 'fleet' && id !== 'burst')) {
    flags = { ...flags, agentBin: await preparePackagedAgent(tmp) }
  }

  if (wants('pg') || wants('mysql') || wants('files') || wants('restore')) {
    let env: BackupEnv | null = null
    try {
      env = await startBackupEnv(path.join(tmp, 'backups'), flags.agentBin)
    } catch (err) {
      for (const id of (['pg', 'mysql', 'files', 'restore'] as const).filter(wants)) results.push(failed(id, err))
    }
    if (env !== null) {
      let pg: PgBackupOutcome | null = null
      if (wants('pg') || wants('restore')) {
        try {
          pg = await pgBackup(env, wants('pg') ? flags : { ...flags, reps: 1, warmup: 0 })
          if (wants('pg')) results.push(pg.result)
        } catch (err) { results.push(failed('pg', err)) }
      }
      if (wants('restore')) {
        try {
          if (pg === null) throw new Error('no PostgreSQL backup to restore (the pg scenario failed)')
          results.push(await pgRestore(env, flags, pg))
        } catch (err) { results.push(failed('restore', err)) }
      }
      if (wants('mysql')) {
        try { results.push(await mysqlBackup(env, flags)) } catch (err) { results.push(failed('mysql', err)) }
      }
      if (wants('files')) {
        try { results.push(await filesBackup(env, flags)) } catch (err) { results.push(failed('files', err)) }
      }
      await cleanupTo(base)
    }
  }
  if (wants('fleet')) {
    try { results.push(await fleet(flags, path.join(tmp, 'fleet'))) } catch (err) { results.push(failed('fleet', err)) }
    await cleanupTo(base)
  }
  if (wants('burst')) {
    try { results.push(await burst(flags)) } catch (err) { results.push(failed('burst', err)) }
    await cleanupTo(base)
  }
  if (wants('idle')) {
    try { results.push(await idle(flags, path.join(tmp, 'idle'))) } catch (err) { results.push(failed('idle', err)) }
    await cleanupTo(base)
  }

  const order = ['pg', 'mysql', 'files', 'restore', 'fleet', 'burst', 'idle']
  results.sort((a, b) => order.indexOf(a.id) - order.indexOf(b.id))
  const table = markdownTable(results)
  const totalSeconds = (Date.now() - started) / 1000
  await mkdir(path.dirname(path.resolve(flags.out)), { recursive: true })
  await writeFile(flags.out, JSON.stringify({ startedAt: new Date(started).toISOString(), totalSeconds, flags, machine: host, results, table }, null, 2) + '\n')
  process.stdout.write(`\n${table}\n\n`)
  for (const r of results) process.stdout.write(`- ${r.label}: ${r.met === null ? 'not tested at the target size' : r.met ? 'MET' : `MISSED (${r.missed.join('; ')})`} — ${r.verdict}\n`)
  process.stdout.write(`\nmachine: ${host.cpu}, ${host.memoryGb} GB RAM; total ${(totalSeconds / 60).toFixed(1)} min; results in ${flags.out}\n`)
}

let flags: Flags | null
try {
  flags = parseFlags(process.argv.slice(2))
} catch (err) {
  process.stderr.write(`${(err as Error).message}\n\n${USAGE}\n`)
  process.exit(2)
}
if (flags === null) {
  process.stdout.write(`${USAGE}\n`)
} else {
  cleanupOnSignals()
  try {
    await main(flags)
  } finally {
    await cleanupAll()
  }
}
