/**
 * Samples one process while something runs: its RSS and (reset-first) peak RSS, the summed RSS of its live
 * descendants (pg_dump, pigz... sampled every `everyMs`, so a short-lived peak can be missed), and optionally
 * the size of a directory (temporary disk). CPU is read before and after, not sampled.
 */
import { readdir, stat } from 'node:fs/promises'
import path from 'node:path'
import { cpu, descendants, memory, resetPeak, writtenBytes } from './proc.ts'

export interface SampleResult {
  seconds: number
  /** VmHWM of the process over the window (reset at start when the kernel allows; else since it started). */
  peakRssBytes: number
  peakResetWorked: boolean
  /** Largest sampled VmRSS of the process. */
  maxSampledRssBytes: number
  /** Last sampled VmRSS. */
  lastRssBytes: number
  /** Largest sampled sum of VmRSS of its descendants. */
  childrenPeakRssBytes: number
  /** CPU seconds of the process itself over the window. */
  cpuSelf: number
  /** CPU seconds of children it reaped during the window. */
  cpuChildren: number
  /** Bytes the process itself caused to be written to storage during the window. */
  writtenBytes: number | null
  /** Largest sampled total size of `watchDir`. */
  watchDirMaxBytes: number
  samples: number
}

export interface Sampler {
  stop (): Promise<SampleResult>
}

export async function dirBytes (dir: string): Promise<number> {
  let total = 0
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => [])
  for (const e of entries) {
    const p = path.join(dir, e.name)
    if (e.isDirectory()) total += await dirBytes(p)
    else total += (await stat(p).catch(() => null))?.size ?? 0
  }
  return total
}

export async function startSampler (pid: number, options: { everyMs?: number, watchDir?: string, children?: boolean } = {}): Promise<Sampler> {
  const everyMs = options.everyMs ?? 100
  const peakResetWorked = await resetPeak(pid)
  const cpu0 = await cpu(pid)
  const written0 = await writtenBytes(pid)
  const t0 = performance.now()
  let maxRss = 0
  let lastRss = 0
  let childrenPeak = 0
  let dirMax = 0
  let samples = 0
  let stopped = false
  const loop = (async () => {
    while (!stopped) {
      const m = await memory(pid)
      if (m !== null) { maxRss = Math.max(maxRss, m.rssBytes); lastRss = m.rssBytes }
      if (options.children !== false) {
        let sum = 0
        for (const c of await descendants(pid)) sum += (await memory(c))?.rssBytes ?? 0
        childrenPeak = Math.max(childrenPeak, sum)
      }
      if (options.watchDir !== undefined) dirMax = Math.max(dirMax, await dirBytes(options.watchDir))
      samples++
      await new Promise((resolve) => setTimeout(resolve, everyMs))
    }
  })()
  return {
    async stop () {
      stopped = true
      await loop
      const seconds = (performance.now() - t0) / 1000
      const m = await memory(pid)
      const cpu1 = await cpu(pid)
      const written1 = await writtenBytes(pid)
      return {
        seconds,
        peakRssBytes: m?.peakBytes ?? maxRss,
        peakResetWorked,
        maxSampledRssBytes: Math.max(maxRss, m?.rssBytes ?? 0),
        lastRssBytes: m?.rssBytes ?? lastRss,
        childrenPeakRssBytes: childrenPeak,
        cpuSelf: cpu0 === null || cpu1 === null ? 0 : cpu1.self - cpu0.self,
        cpuChildren: cpu0 === null || cpu1 === null ? 0 : cpu1.children - cpu0.children,
        writtenBytes: written0 === null || written1 === null ? null : written1 - written0,
        watchDirMaxBytes: dirMax,
        samples,
      }
    },
  }
}
