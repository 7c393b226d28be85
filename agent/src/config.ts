import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { SECOND } from '@cloudpilot/protocol'

/** The agent's configuration file (default /etc/cloudpilot/agent.json, mode 0600, owner cloudpilot). */
export interface AgentConfig {
  coordinatorUrl: string
  serverId: string
  agentCredential: string
  /** Outbox, job journal and status file. */
  stateDir: string
  /** Local copies of backups: <spoolDir>/<serverId>/<backupId>.<ext>. */
  spoolDir: string
  logLevel: string
  /** How long SIGTERM waits for running jobs before aborting them. */
  shutdownGraceMs: number
}

export const DEFAULT_CONFIG_PATH = '/etc/cloudpilot/agent.json'
export const DEFAULT_STATE_DIR = '/var/lib/cloudpilot'
export const DEFAULT_SPOOL_DIR = '/tmp/cloudpilot-backups'
export const DEFAULT_SHUTDOWN_GRACE_MS = 30 * SECOND

/** Environment the agent reads (only here): config path, root override, log level. */
export interface AgentEnv {
  configPath: string
  allowRoot: boolean
  logLevel: string | null
  /** Where install.sh put the agent (releases/, current): set by its start script; null when run from source. */
  agentHome: string | null
}

export function agentEnv (env: NodeJS.ProcessEnv = process.env): AgentEnv {
  return {
    configPath: env.CLOUDPILOT_AGENT_CONFIG || DEFAULT_CONFIG_PATH,
    allowRoot: env.CLOUDPILOT_ALLOW_ROOT === '1' || env.CLOUDPILOT_ALLOW_ROOT === 'true',
    logLevel: env.LOG_LEVEL || null,
    agentHome: env.CLOUDPILOT_AGENT_HOME || null,
  }
}

export class ConfigError extends Error {
  override name = 'ConfigError'
}

export async function readConfig (file: string): Promise<AgentConfig> {
  let raw: string
  try {
    raw = await readFile(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new ConfigError(`no agent config at ${file}: enroll first (cloudpilot-agent enroll --coordinator URL --token TOKEN)`)
    if ((err as NodeJS.ErrnoException).code === 'EACCES') throw new ConfigError(`cannot read ${file}: run the agent as the cloudpilot user (the file is mode 0600)`)
    throw err
  }
  let parsed: Partial<AgentConfig>
  try {
    parsed = JSON.parse(raw) as Partial<AgentConfig>
  } catch {
    throw new ConfigError(`${file} is not valid JSON`)
  }
  for (const key of ['coordinatorUrl', 'serverId', 'agentCredential'] as const) {
    if (typeof parsed[key] !== 'string' || parsed[key] === '') throw new ConfigError(`${file}: missing ${key}`)
  }
  try {
    new URL(parsed.coordinatorUrl as string)
  } catch {
    throw new ConfigError(`${file}: coordinatorUrl is not a URL`)
  }
  return {
    coordinatorUrl: (parsed.coordinatorUrl as string).replace(/\/+$/, ''),
    serverId: parsed.serverId as string,
    agentCredential: parsed.agentCredential as string,
    stateDir: parsed.stateDir ?? DEFAULT_STATE_DIR,
    spoolDir: parsed.spoolDir ?? DEFAULT_SPOOL_DIR,
    logLevel: parsed.logLevel ?? 'info',
    shutdownGraceMs: typeof parsed.shutdownGraceMs === 'number' ? parsed.shutdownGraceMs : DEFAULT_SHUTDOWN_GRACE_MS,
  }
}

/** Writes the config atomically with mode 0600 (it holds the agent credential). */
export async function writeConfig (file: string, config: AgentConfig): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true, mode: 0o750 })
  const tmp = `${file}.tmp-${process.pid}`
  await writeFile(tmp, JSON.stringify(config, null, 2) + '\n', { mode: 0o600 })
  await chmod(tmp, 0o600)
  await rename(tmp, file)
}
