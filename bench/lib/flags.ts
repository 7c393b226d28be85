/** Command-line flags of `npm run bench -- [flags]`, with the defaults of a run of about ten minutes on 2 cores. */
import { parseArgs } from 'node:util'

export const SCENARIOS = ['pg', 'mysql', 'files', 'restore', 'fleet', 'burst', 'idle'] as const
export type ScenarioId = (typeof SCENARIOS)[number]

export interface Flags {
  only: ScenarioId[]
  pgSizeMb: number
  mysqlSizeMb: number
  filesCount: number
  largeFiles: number
  largeFileMb: number
  reps: number
  warmup: number
  agents: number
  fleetSeconds: number
  fleetRate: number
  fleetHeartbeatMs: number
  fleetStore: 'postgresql' | 'pglite'
  /** Extra Node options for the fleet's coordinator process (e.g. --cpu-prof --cpu-prof-dir=DIR). */
  coordinatorNodeArgs: string[]
  burstPlans: number
  idleSeconds: number
  out: string
  /** The agent to measure; null: decided by `agent`. */
  agentBin: string | null
  /** Without --agent-bin: the packaged agent (default) or the repository's sources. */
  agent: 'package' | 'sources'
}

export const USAGE = `npm run bench -- [flags]
  --only LIST            scenarios to run, comma-separated: ${SCENARIOS.join(',')} (default all)
  --pg-size-mb N         PostgreSQL table data to generate (default 256; ~1 GB: 1024)
  --mysql-size-mb N      MariaDB table data to generate (default 128)
  --files-count N        small files in the files tree (default 100000)
  --large-files N        large files in the tree (default 3)
  --large-file-mb N      size of each large file (default 32)
  --reps N               timed repetitions of each side (default 3)
  --warmup N             untimed warm-up runs of each side first (default 1)
  --agents N             simulated agents of the fleet scenario (default 5000, up to 20000)
  --fleet-seconds N      duration of the API load in the fleet scenario (default 30)
  --fleet-rate N         API requests per second, open loop (default 200)
  --fleet-heartbeat-ms N heartbeat interval the coordinator gives the agents (default 15000, the product default)
  --fleet-store S        coordinator store of the fleet scenario: postgresql | pglite (default postgresql)
  --coordinator-node-args=ARGS  Node options for the fleet's coordinator, space-separated, e.g.
                         --coordinator-node-args="--cpu-prof --cpu-prof-dir=/tmp/prof" (written when it stops)
  --burst-plans N        plans due in the same slot (default 10000)
  --idle-seconds N       how long the idle agent is watched (default 60)
  --out FILE             results file (default bench/results.json)
  --agent KIND           package (default): the agent package servers run (bundle + its own Node), built from
                         this checkout; sources: node agent/src/bin/cloudpilot-agent.ts (Node type stripping)
  --agent-bin FILE       the agent to measure instead (a .js/.ts file runs with this Node, anything else is executed)
  --help`

export function parseFlags (argv: string[]): Flags | null {
  const { values } = parseArgs({
    args: argv,
    options: {
      only: { type: 'string' },
      'pg-size-mb': { type: 'string' },
      'mysql-size-mb': { type: 'string' },
      'files-count': { type: 'string' },
      'large-files': { type: 'string' },
      'large-file-mb': { type: 'string' },
      reps: { type: 'string' },
      warmup: { type: 'string' },
      agents: { type: 'string' },
      'fleet-seconds': { type: 'string' },
      'fleet-rate': { type: 'string' },
      'fleet-heartbeat-ms': { type: 'string' },
      'fleet-store': { type: 'string' },
      'coordinator-node-args': { type: 'string' },
      'burst-plans': { type: 'string' },
      'idle-seconds': { type: 'string' },
      out: { type: 'string' },
      'agent-bin': { type: 'string' },
      agent: { type: 'string' },
      help: { type: 'boolean' },
    },
    strict: true,
  })
  if (values.help === true) return null
  const num = (name: string, value: string | undefined, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER): number => {
    if (value === undefined) return fallback
    const n = Number(value)
    if (!Number.isFinite(n) || n < min || n > max) throw new Error(`--${name} must be a number from ${min} to ${max}, got ${JSON.stringify(value)}`)
    return n
  }
  const only = values.only === undefined ? [...SCENARIOS] : values.only.split(',').map((s) => s.trim()).filter((s) => s !== '')
  for (const s of only) if (!(SCENARIOS as readonly string[]).includes(s)) throw new Error(`--only: unknown scenario ${JSON.stringify(s)} (known: ${SCENARIOS.join(', ')})`)
  const store = values['fleet-store'] ?? 'postgresql'
  if (store !== 'postgresql' && store !== 'pglite') throw new Error('--fleet-store must be postgresql or pglite')
  return {
    only: only as ScenarioId[],
    pgSizeMb: num('pg-size-mb', values['pg-size-mb'], 256, 1),
    mysqlSizeMb: num('mysql-size-mb', values['mysql-size-mb'], 128, 1),
    filesCount: num('files-count', values['files-count'], 100_000, 1),
    largeFiles: num('large-files', values['large-files'], 3, 0),
    largeFileMb: num('large-file-mb', values['large-file-mb'], 32, 1),
    reps: num('reps', values.reps, 3, 1),
    warmup: num('warmup', values.warmup, 1, 0),
    agents: num('agents', values.agents, 5000, 1, 20_000),
    fleetSeconds: num('fleet-seconds', values['fleet-seconds'], 30, 1),
    fleetRate: num('fleet-rate', values['fleet-rate'], 200, 1),
    fleetHeartbeatMs: num('fleet-heartbeat-ms', values['fleet-heartbeat-ms'], 15_000, 100),
    fleetStore: store,
    coordinatorNodeArgs: (values['coordinator-node-args'] ?? '').split(/\s+/).filter((a) => a !== ''),
    burstPlans: num('burst-plans', values['burst-plans'], 10_000, 1),
    idleSeconds: num('idle-seconds', values['idle-seconds'], 60, 1),
    out: values.out ?? 'bench/results.json',
    agentBin: values['agent-bin'] ?? null,
    agent: agentKind(values.agent),
  }
}

function agentKind (value: string | undefined): 'package' | 'sources' {
  if (value === undefined || value === 'package') return 'package'
  if (value === 'sources') return 'sources'
  throw new Error(`--agent: ${JSON.stringify(value)} is neither package nor sources`)
}
