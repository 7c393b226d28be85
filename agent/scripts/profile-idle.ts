/**
 * Idle footprint of a real agent: starts a coordinator and an enrolled agent (`cloudpilot-agent run`), waits
 * until it is online, then samples /proc/<pid> of the agent for `seconds` (default 60) and prints RSS (VmRSS,
 * VmHWM) and the CPU it used over the window.
 *
 *   npx node agent/scripts/profile-idle.ts [seconds] [heartbeatMs=15000]
 *
 * AGENT_NODE_OPTIONS is passed to the agent as NODE_OPTIONS (to try V8 flags); AGENT_ENTRY runs another entry
 * point than agent/src/bin/cloudpilot-agent.ts for `run`: the packaged agent is measured with
 * AGENT_ENTRY=<unpacked package>/lib/cloudpilot-agent.js, which runs under the package's own bin/node (or AGENT_NODE).
 * MALLOC_ARENA_MAX and the other variables of this process reach the agent unchanged.
 */
import { spawn } from 'node:child_process'
import { access, readFile } from 'node:fs/promises'
import path from 'node:path'
import { startAgent, startCoordinator, waitOnline } from '../../coordinator/test/helpers/processes.ts'

const seconds = Number(process.argv[2] ?? 60)
const heartbeatMs = Number(process.argv[3] ?? 15000)
const cleanups: Array<() => Promise<void>> = []
const t = { teardown: (fn: () => Promise<void> | void) => { cleanups.push(async () => { await fn() }) } }
const TICK = 100 // USER_HZ

async function proc (pid: number): Promise<{ rss: number, hwm: number, cpu: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  const kb = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? 0)
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return { rss: kb('VmRSS') / 1024, hwm: kb('VmHWM') / 1024, cpu: (Number(f[11]) + Number(f[12])) / TICK }
}

try {
  const coordinator = await startCoordinator(t as never, { heartbeatIntervalMs: heartbeatMs })
  const env: Record<string, string> = { LOG_LEVEL: 'info' }
  if (process.env.AGENT_NODE_OPTIONS !== undefined) env.NODE_OPTIONS = process.env.AGENT_NODE_OPTIONS
  const entry = process.env.AGENT_ENTRY
  const agent = await startAgent(t as never, coordinator, { env, start: entry === undefined })
  let pid = agent.proc?.pid ?? 0
  if (entry !== undefined) {
    const packagedNode = path.join(path.dirname(entry), '..', 'bin', 'node')
    const node = process.env.AGENT_NODE ?? await access(packagedNode).then(() => packagedNode, () => process.execPath)
    const child = spawn(node, [entry, 'run', '--config', agent.configPath], { env: { ...process.env, CLOUDPILOT_ALLOW_ROOT: '1', ...env }, stdio: 'ignore' })
    t.teardown(() => { child.kill('SIGKILL') })
    pid = child.pid ?? 0
  }
  await waitOnline(coordinator, agent.serverId)
  await new Promise((resolve) => setTimeout(resolve, 2000))
  const first = await proc(pid)
  const started = performance.now()
  let maxRss = first.rss
  const end = started + seconds * 1000
  while (performance.now() < end) {
    await new Promise((resolve) => setTimeout(resolve, 1000))
    maxRss = Math.max(maxRss, (await proc(pid)).rss)
  }
  const last = await proc(pid)
  const elapsed = (performance.now() - started) / 1000
  console.log(JSON.stringify({
    seconds: Number(elapsed.toFixed(1)), heartbeatMs,
    rssStartMB: Number(first.rss.toFixed(1)), rssEndMB: Number(last.rss.toFixed(1)), rssMaxMB: Number(maxRss.toFixed(1)), vmHwmMB: Number(last.hwm.toFixed(1)),
    cpuSeconds: Number((last.cpu - first.cpu).toFixed(2)), cpuPercentOfCore: Number((100 * (last.cpu - first.cpu) / elapsed).toFixed(3)),
  }))
} finally {
  for (const fn of cleanups.reverse()) await fn().catch(() => {})
}
