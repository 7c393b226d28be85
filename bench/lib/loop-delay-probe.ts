/**
 * Preloaded into the measured coordinator (`node --import bench/lib/loop-delay-probe.ts`) when
 * BENCH_LOOP_DELAY_FILE is set: every second, one JSON line with the event-loop delay of that second (max, p99,
 * mean in ms, from perf_hooks.monitorEventLoopDelay at 10 ms resolution), the CPU the process used in it, how
 * long its main thread waited for a CPU (run queue delay from /proc/self/schedstat: time the machine's other work
 * took from it) and the heap in use. Shows whether API latency comes from the process being busy (a stalled loop)
 * or from the process not being scheduled, and when.
 */
import { appendFileSync, readFileSync } from 'node:fs'
import { monitorEventLoopDelay } from 'node:perf_hooks'

const file = process.env.BENCH_LOOP_DELAY_FILE
if (file !== undefined && file !== '') {
  const h = monitorEventLoopDelay({ resolution: 10 })
  h.enable()
  const ms = (ns: number): number => Math.round(ns / 1e4) / 100
  /** Nanoseconds the main thread waited on a run queue since it started (0 where /proc is missing). */
  const runDelay = (): number => { try { return Number(readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ')[1]) || 0 } catch { return 0 } }
  let cpu = process.cpuUsage()
  let waited = runDelay()
  const timer = setInterval(() => {
    const m = process.memoryUsage()
    const c = process.cpuUsage(cpu)
    cpu = process.cpuUsage()
    const w = runDelay()
    const runQueueMs = ms(w - waited)
    waited = w
    appendFileSync(file, JSON.stringify({ t: Date.now(), maxMs: ms(h.max), p99Ms: ms(h.percentile(99)), meanMs: ms(h.mean), cpuMs: Math.round((c.user + c.system) / 1000), runQueueMs, heapMb: Math.round(m.heapUsed / 1048576), rssMb: Math.round(m.rss / 1048576), externalMb: Math.round(m.external / 1048576), arrayBuffersMb: Math.round(m.arrayBuffers / 1048576) }) + '\n')
    h.reset()
  }, 1000)
  timer.unref()
}
