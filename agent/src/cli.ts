import os from 'node:os'
import { parseArgs } from 'node:util'
import { agentEnv, ConfigError, DEFAULT_SHUTDOWN_GRACE_MS, DEFAULT_SPOOL_DIR, DEFAULT_STATE_DIR, readConfig, writeConfig } from './config.ts'
import { createLogger } from './logger.ts'
import { readStatus } from './agent-status-file.ts'
import { AGENT_VERSION } from './version.ts'

const USAGE = `Usage:
  cloudpilot-agent enroll --coordinator URL (--token TOKEN | --token-stdin) [--config PATH] [--state-dir DIR] [--spool-dir DIR] [--force]
  cloudpilot-agent run [--config PATH]
  cloudpilot-agent status [--config PATH]
  cloudpilot-agent revoke [--config PATH]     revoke this server on the coordinator with its own credential (uninstall)
  cloudpilot-agent --version

--token-stdin reads the enrollment token from standard input, so that it never shows in the process list.

The config defaults to /etc/cloudpilot/agent.json (or CLOUDPILOT_AGENT_CONFIG). The agent refuses to run as root
unless --allow-root or CLOUDPILOT_ALLOW_ROOT=1 is given (development and tests only).`

export interface CliIo {
  out: (text: string) => void
  err: (text: string) => void
}

const defaultIo: CliIo = {
  out: (t) => { process.stdout.write(t + '\n') },
  err: (t) => { process.stderr.write(t + '\n') },
}

/** Runs the command line; resolves with the process exit code. */
export async function main (argv: string[], io: CliIo = defaultIo): Promise<number> {
  const env = agentEnv()
  let parsed
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        config: { type: 'string' },
        coordinator: { type: 'string' },
        token: { type: 'string' },
        'token-stdin': { type: 'boolean', default: false },
        'state-dir': { type: 'string' },
        'spool-dir': { type: 'string' },
        force: { type: 'boolean', default: false },
        'allow-root': { type: 'boolean', default: false },
        version: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    })
  } catch (err) {
    io.err(`cloudpilot-agent: ${(err as Error).message}\n\n${USAGE}`)
    return 2
  }
  const { values, positionals } = parsed
  if (values.version === true) { io.out(AGENT_VERSION); return 0 }
  const command = positionals[0]
  if (values.help === true || command === undefined) { io.out(USAGE); return command === undefined && values.help !== true ? 2 : 0 }
  const configPath = values.config ?? env.configPath
  const allowRoot = values['allow-root'] === true || env.allowRoot

  if (command !== 'status' && process.getuid?.() === 0 && !allowRoot) {
    io.err('cloudpilot-agent: refusing to run as root. Run it as the unprivileged cloudpilot user (the installer sets this up); --allow-root is for development and tests only.')
    return 1
  }

  try {
    switch (command) {
      case 'enroll': return await enroll({ configPath, coordinator: values.coordinator, token: values['token-stdin'] === true ? await readStdin() : values.token, stateDir: values['state-dir'], spoolDir: values['spool-dir'], force: values.force === true }, io)
      case 'run': return await run(configPath, env.logLevel, env.agentHome)
      case 'status': return await status(configPath, io)
      case 'revoke': return await revoke(configPath, io)
      default:
        io.err(`cloudpilot-agent: unknown command ${JSON.stringify(command)}\n\n${USAGE}`)
        return 2
    }
  } catch (err) {
    if (err instanceof ConfigError) { io.err(`cloudpilot-agent: ${err.message}`); return 78 }
    throw err
  }
}

async function enroll (o: { configPath: string, coordinator: string | undefined, token: string | undefined, stateDir: string | undefined, spoolDir: string | undefined, force: boolean }, io: CliIo): Promise<number> {
  if (o.coordinator === undefined || o.token === undefined) {
    io.err('cloudpilot-agent enroll: --coordinator URL and --token TOKEN (or --token-stdin) are required')
    return 2
  }
  if (!o.force) {
    const existing = await readConfig(o.configPath).catch(() => null)
    if (existing !== null) {
      io.err(`cloudpilot-agent enroll: ${o.configPath} already holds the enrollment of server ${existing.serverId}; pass --force to replace it`)
      return 1
    }
  }
  const base = o.coordinator.replace(/\/+$/, '')
  let response: Response
  try {
    response = await fetch(`${base}/api/v1/agents/enroll`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ token: o.token, hostname: os.hostname() }),
      signal: AbortSignal.timeout(30_000),
    })
  } catch (err) {
    io.err(`cloudpilot-agent enroll: cannot reach the coordinator at ${base}: ${(err as Error).cause instanceof Error ? ((err as Error).cause as Error).message : (err as Error).message}`)
    return 1
  }
  const body = await response.json().catch(() => null) as { serverId?: string, agentCredential?: string, error?: { code: string, message: string, hint?: string } } | null
  if (!response.ok || body?.serverId === undefined || body.agentCredential === undefined) {
    const e = body?.error
    io.err(`cloudpilot-agent enroll: ${e === undefined ? `HTTP ${response.status}` : `${e.code}: ${e.message}${e.hint === undefined ? '' : ` ${e.hint}`}`}`)
    return 1
  }
  await writeConfig(o.configPath, {
    coordinatorUrl: base,
    serverId: body.serverId,
    agentCredential: body.agentCredential,
    stateDir: o.stateDir ?? DEFAULT_STATE_DIR,
    spoolDir: o.spoolDir ?? DEFAULT_SPOOL_DIR,
    logLevel: 'info',
    shutdownGraceMs: DEFAULT_SHUTDOWN_GRACE_MS,
  })
  io.out(JSON.stringify({ serverId: body.serverId, config: o.configPath }))
  return 0
}

async function readStdin (): Promise<string | undefined> {
  const chunks: Buffer[] = []
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer)
  const text = Buffer.concat(chunks).toString('utf8').trim()
  return text === '' ? undefined : text
}

/** Revokes this server with its own credential (POST /api/v1/agents/revoke); used by the uninstaller. */
async function revoke (configPath: string, io: CliIo): Promise<number> {
  const config = await readConfig(configPath)
  let response: Response
  try {
    response = await fetch(`${config.coordinatorUrl}/api/v1/agents/revoke`, {
      method: 'POST',
      headers: { authorization: `Bearer ${config.agentCredential}` },
      signal: AbortSignal.timeout(30_000),
    })
  } catch (err) {
    io.err(`cloudpilot-agent revoke: cannot reach the coordinator at ${config.coordinatorUrl}: ${(err as Error).message}`)
    return 1
  }
  if (response.status === 204) { io.out(JSON.stringify({ serverId: config.serverId, revoked: true })); return 0 }
  const body = await response.json().catch(() => null) as { error?: { code: string, message: string } } | null
  io.err(`cloudpilot-agent revoke: ${body?.error === undefined ? `HTTP ${response.status}` : `${body.error.code}: ${body.error.message}`}`)
  return 1
}

async function run (configPath: string, logLevel: string | null, agentHome: string | null): Promise<number> {
  const config = await readConfig(configPath)
  const log = createLogger({ level: logLevel ?? config.logLevel }).child({ serverId: config.serverId })
  const { startAgent } = await import('./agent-service.ts')
  const agent = await startAgent(config, log, { agentHome })
  const onSignal = (signal: string): void => {
    agent.stop(signal).catch((err: unknown) => log.error({ err }, 'error while stopping'))
  }
  process.once('SIGTERM', () => onSignal('SIGTERM'))
  process.once('SIGINT', () => onSignal('SIGINT'))
  return await agent.stopped
}

async function status (configPath: string, io: CliIo): Promise<number> {
  const config = await readConfig(configPath)
  const s = await readStatus(config.stateDir)
  const alive = s !== null && isAlive(s.pid)
  io.out(JSON.stringify({
    serverId: config.serverId,
    coordinatorUrl: config.coordinatorUrl,
    running: alive,
    connected: alive && s.connected,
    lastConnectedAt: s?.lastConnectedAt ?? null,
    runningJobs: alive ? s.runningJobs : [],
    outboxPending: s?.outboxPending ?? 0,
    updatedAt: s?.updatedAt ?? null,
  }, null, 2))
  return alive ? 0 : 3
}

function isAlive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}
