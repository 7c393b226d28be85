import os from 'node:os'
import { mkdir, statfs } from 'node:fs/promises'
import path from 'node:path'
import { PROTOCOL_VERSION, SECOND } from '@cloudpilot/protocol'
import { AGENT_VERSION } from './version.ts'
import { SelfUpgrade, UPGRADE_EXIT_CODE } from './self-upgrade.ts'
import type { AgentConfig } from './config.ts'
import type { Logger } from './logger.ts'
import { Outbox } from './outbox.ts'
import { JobJournal } from './job-journal.ts'
import { CoordinatorConnection } from './coordinator-connection.ts'
import { JobRunner } from './job-runner.ts'
import { writeStatus } from './agent-status-file.ts'
import { detectTools } from './sources/tool-detect.ts'
import type { RunBackup } from './backup/backup-context.ts'
import type { RunRestore } from './restore/restore-context.ts'

// The backup and restore machinery (tar-stream, picomatch, dump sources, pipeline) is loaded by the first job
// that needs it, not at start-up: an idle agent stays small.
const runBackup: RunBackup = async (job, ctx) => await (await import('./backup/run-backup.ts')).runBackup(job, ctx)
const runRestore: RunRestore = async (job, ctx) => await (await import('./restore/run-restore.ts')).runRestore(job, ctx)

export interface AgentService {
  /** Resolves when the agent stopped: 0 after a clean stop, 78 after a fatal rejection (enroll again). */
  readonly stopped: Promise<number>
  stop (reason: string): Promise<void>
  connection: CoordinatorConnection
  runner: JobRunner
}

/** `cloudpilot-agent run`: connect, serve jobs, report, until stopped. */
export async function startAgent (config: AgentConfig, log: Logger, options: { agentHome?: string | null } = {}): Promise<AgentService> {
  const spoolDir = path.join(config.spoolDir, config.serverId)
  await mkdir(config.stateDir, { recursive: true, mode: 0o700 })
  await mkdir(spoolDir, { recursive: true, mode: 0o700 })
  const outbox = new Outbox(config.stateDir)
  await outbox.load()
  const journal = new JobJournal(config.stateDir)
  const leftovers = await journal.load()
  const toolsPromise = detectTools()

  let runner: JobRunner | null = null
  const connection = new CoordinatorConnection({
    coordinatorUrl: config.coordinatorUrl,
    credential: config.agentCredential,
    log: log.child({ component: 'connection' }),
    outbox,
    hello: async () => ({
      protocolVersion: PROTOCOL_VERSION,
      agentVersion: AGENT_VERSION,
      hostname: os.hostname(),
      os: `${os.type()} ${os.release()}${await distroName()}`,
      arch: process.arch,
      tools: await toolsPromise,
      runningJobs: runner?.runningJobIds() ?? [],
    }),
    heartbeat: async () => ({
      load: os.loadavg(),
      memory: { totalBytes: os.totalmem(), freeBytes: os.freemem(), agentRssBytes: process.memoryUsage.rss() },
      spoolFreeBytes: await freeBytes(spoolDir),
      runningJobs: runner?.runningJobIds() ?? [],
    }),
  })
  runner = new JobRunner({
    log: log.child({ component: 'jobs' }),
    outbox,
    journal,
    connection,
    runBackup,
    runRestore,
    spoolDir,
    coordinatorUrl: config.coordinatorUrl,
    credential: config.agentCredential,
    serverId: config.serverId,
  })
  const jobs = runner
  await jobs.recover(leftovers)
  connection.on('conn:welcome', (welcome) => jobs.onWelcome(welcome))
  connection.on('conn:frame', (frame) => jobs.handle(frame))

  const publishStatus = async (): Promise<void> => {
    await writeStatus(config.stateDir, {
      pid: process.pid,
      serverId: config.serverId,
      coordinatorUrl: config.coordinatorUrl,
      connected: connection.ready,
      lastConnectedAt: connection.lastConnectedAt?.toISOString() ?? null,
      runningJobs: jobs.runningJobIds(),
      outboxPending: outbox.size,
      agentVersion: AGENT_VERSION,
      updatedAt: new Date().toISOString(),
    }).catch((err: unknown) => log.debug({ err }, 'could not write status file'))
  }
  const statusTimer = setInterval(() => { publishStatus().catch(() => {}) }, 5 * SECOND)
  connection.on('conn:welcome', () => { publishStatus().catch(() => {}) })
  connection.on('conn:lost', () => { publishStatus().catch(() => {}) })

  let resolveStopped: (code: number) => void = () => {}
  const stopped = new Promise<number>((resolve) => { resolveStopped = resolve })
  let stopping = false
  const stop = async (reason: string, code = 0): Promise<void> => {
    if (stopping) return
    stopping = true
    log.info({ reason }, 'agent stopping')
    upgrades.stop()
    await jobs.shutdown(config.shutdownGraceMs)
    await connection.drainOutbox(5 * SECOND)
    await connection.stop()
    clearInterval(statusTimer)
    await publishStatus()
    resolveStopped(code)
  }
  connection.on('conn:fatal', (message) => { stop(message, 78).catch(() => resolveStopped(78)) })
  const upgrades = new SelfUpgrade({
    home: options.agentHome ?? null,
    version: AGENT_VERSION,
    coordinatorUrl: config.coordinatorUrl,
    log: log.child({ component: 'upgrade' }),
    send: (frame) => connection.send(frame),
    busy: () => jobs.runningJobIds().length > 0,
    restart: () => { stop('upgrade', UPGRADE_EXIT_CODE).catch(() => resolveStopped(UPGRADE_EXIT_CODE)) },
  })
  connection.on('conn:welcome', () => { upgrades.onWelcome().catch((err: unknown) => log.warn({ err }, 'could not settle the last upgrade')) })
  connection.on('conn:frame', (frame) => { if (frame.type === 'agent.upgrade') upgrades.handle(frame) })
  connection.start()
  await publishStatus()
  return { stopped, stop: async (reason) => { await stop(reason) }, connection, runner: jobs }
}

async function freeBytes (dir: string): Promise<number | null> {
  try {
    const s = await statfs(dir)
    return s.bavail * s.bsize
  } catch {
    return null
  }
}

async function distroName (): Promise<string> {
  try {
    const { readFile } = await import('node:fs/promises')
    const text = await readFile('/etc/os-release', 'utf8')
    const name = /^PRETTY_NAME="?([^"\n]+)"?/m.exec(text)?.[1]
    return name === undefined ? '' : ` (${name})`
  } catch {
    return ''
  }
}
