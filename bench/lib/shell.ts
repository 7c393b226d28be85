/**
 * A baseline as a user types it: `bash -c 'set -eo pipefail; <pipeline>'`. Wall time from spawn to exit; CPU seconds of the
 * whole pipeline (the benchmark's own cutime+cstime grows by exactly what the reaped shell and its children
 * used); peak RSS as the largest sampled sum over the pipeline's processes (every 100 ms).
 */
import { spawn } from 'node:child_process'
import { cpu, descendants, memory } from './proc.ts'

export interface ShellRun {
  seconds: number
  cpuSeconds: number
  peakRssBytes: number
}

export async function runShell (command: string, env: NodeJS.ProcessEnv = process.env): Promise<ShellRun> {
  const before = await cpu('self')
  const started = performance.now()
  const proc = spawn('bash', ['-c', `set -eo pipefail; ${command}`], { env, stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  proc.stderr.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-4000) })
  let peak = 0
  let done = false
  const sampling = (async () => {
    while (!done) {
      const pid = proc.pid
      if (pid !== undefined) {
        let sum = (await memory(pid))?.rssBytes ?? 0
        for (const c of await descendants(pid)) sum += (await memory(c))?.rssBytes ?? 0
        peak = Math.max(peak, sum)
      }
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
  })()
  const code = await new Promise<number | null>((resolve) => proc.once('close', resolve))
  const seconds = (performance.now() - started) / 1000
  done = true
  await sampling
  const after = await cpu('self')
  if (code !== 0) throw new Error(`baseline failed (exit ${code}): ${command}\n${stderr}`)
  return { seconds, cpuSeconds: before === null || after === null ? 0 : after.children - before.children, peakRssBytes: peak }
}
