/**
 * Scenario 7: a real enrolled agent, connected to a coordinator (the product's 15 s heartbeat), doing nothing:
 * its RSS and CPU over --idle-seconds.
 */
import path from 'node:path'
import type { Flags } from '../lib/flags.ts'
import type { ScenarioResult } from '../lib/result.ts'
import { startAgent, startCoordinator } from '../lib/services.ts'
import { startSampler } from '../lib/sampler.ts'
import { memory } from '../lib/proc.ts'
import { MB } from '../lib/stats.ts'

export async function idle (flags: Flags, dir: string): Promise<ScenarioResult> {
  const coordinator = await startCoordinator({ dataDir: path.join(dir, 'coordinator'), env: { CLOUDPILOT_HEARTBEAT_INTERVAL_MS: '15000' } })
  const agent = await startAgent(coordinator, path.join(dir, 'agent'), flags.agentBin)
  const pid = agent.proc.pid as number
  // Past start-up (tool detection, first heartbeat).
  await new Promise((resolve) => setTimeout(resolve, 5000))
  const startupPeak = (await memory(pid))?.peakBytes ?? 0
  process.stderr.write(`[idle] watching the agent for ${flags.idleSeconds} s\n`)
  const sampler = await startSampler(pid, { everyMs: 500 })
  await new Promise((resolve) => setTimeout(resolve, flags.idleSeconds * 1000))
  const s = await sampler.stop()
  const cpu = s.cpuSelf + s.cpuChildren
  const percent = 100 * cpu / s.seconds
  const peakMb = s.peakRssBytes / MB
  const online = (await coordinator.api.get(`/api/v1/servers/${agent.serverId}`)).body.status
  return {
    id: 'idle',
    label: 'Agent idle',
    measured: 'enrolled agent process connected to a coordinator, no jobs',
    seconds: null,
    comparisons: [],
    peakRssMb: peakMb,
    cpuSeconds: cpu,
    target: '<= 60 MB RSS, < 1% of a core',
    met: peakMb <= 60 && percent < 1 && online === 'online',
    missed: [
      ...(peakMb <= 60 ? [] : [`RSS ${peakMb.toFixed(0)} MB > 60`]),
      ...(percent < 1 ? [] : [`CPU ${percent.toFixed(2)}% >= 1%`]),
      ...(online === 'online' ? [] : [`server ${String(online)}`]),
    ],
    summary: `RSS ${(s.lastRssBytes / MB).toFixed(0)} MB (peak ${peakMb.toFixed(0)}); CPU ${percent.toFixed(2)}% of a core over ${s.seconds.toFixed(0)} s`,
    verdict: `RSS ${(s.lastRssBytes / MB).toFixed(0)} MB (peak ${peakMb.toFixed(0)} MB over ${s.seconds.toFixed(0)} s; ${(startupPeak / MB).toFixed(0)} MB peak at start-up), CPU ${percent.toFixed(2)}% of a core, server ${online}`,
    notes: [`Agent started as: ${flags.agentBin ?? 'node agent/src/bin/cloudpilot-agent.ts (repository sources, Node type stripping)'}.`, 'Peak RSS is VmHWM reset at the start of the window; the start-up peak (tool detection, first connect) is reported apart.'],
    extra: { seconds: s.seconds, rssMb: s.lastRssBytes / MB, peakRssMb: peakMb, startupPeakRssMb: startupPeak / MB, cpuSeconds: cpu, cpuPercentOfOneCore: percent, serverStatus: online },
  }
}
