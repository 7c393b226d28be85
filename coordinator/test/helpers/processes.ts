import { spawn, type ChildProcess } from 'node:child_process'
import { createWriteStream } from 'node:fs'
import { mkdtemp, readFile } from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Test } from 'tap'
import { apiClient, type ApiClient } from './api-client.ts'
import { waitFor } from './wait-for.ts'
import { tempPostgresDatabase } from './databases.ts'

const ROOT = fileURLToPath(new URL('../../../', import.meta.url))
export const COORDINATOR_BIN = path.join(ROOT, 'coordinator/src/bin/cloudpilot-coordinator.ts')
export const AGENT_BIN = path.join(ROOT, 'agent/src/bin/cloudpilot-agent.ts')

export async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as net.AddressInfo).port
      server.close(() => resolve(port))
    })
  })
}

export async function tempDir (t: Test, prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), `${prefix}-`))
  // Left in place on failure for inspection when CLOUDPILOT_KEEP_TEST_DIRS=1.
  if (process.env.CLOUDPILOT_KEEP_TEST_DIRS !== '1') t.teardown(async () => { const { rm } = await import('node:fs/promises'); await rm(dir, { recursive: true, force: true }) })
  return dir
}

function exited (proc: ChildProcess): Promise<number | null> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve(proc.exitCode)
  return new Promise((resolve) => proc.once('exit', (code) => resolve(code)))
}

export interface CoordinatorProcess {
  url: string
  port: number
  token: string
  api: ApiClient
  dataDir: string
  logFile: string
  proc: ChildProcess
  /** SIGTERM and wait. */
  stop (): Promise<void>
  /** SIGKILL and wait. */
  kill (): Promise<void>
  /** Start again on the same port and data (after stop/kill). */
  restart (): Promise<void>
  log (): Promise<string>
}

export interface CoordinatorOptions {
  /** Store: a fresh PostgreSQL database (default, fast) or the embedded PGlite default in DATA_DIR. */
  store?: 'postgresql' | 'pglite'
  databaseUrl?: string
  heartbeatIntervalMs?: number
  env?: Record<string, string>
  dataDir?: string
}

/** Starts a real coordinator process (node coordinator/src/bin/cloudpilot-coordinator.ts) on a free loopback port. */
export async function startCoordinator (t: Test, options: CoordinatorOptions = {}): Promise<CoordinatorProcess> {
  const dataDir = options.dataDir ?? await tempDir(t, 'cp-coord')
  const databaseUrl = options.databaseUrl ?? (options.store === 'pglite' ? undefined : (await tempPostgresDatabase(t, 'cp_coord')).url)
  const port = await freePort()
  const token = `cpk_test_${Math.random().toString(36).slice(2)}${Math.random().toString(36).slice(2)}`
  const logFile = path.join(dataDir, 'coordinator.log')
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PORT: String(port),
    HOST: '127.0.0.1',
    DATA_DIR: dataDir,
    CLOUDPILOT_ADMIN_TOKEN: token,
    CLOUDPILOT_HEARTBEAT_INTERVAL_MS: String(options.heartbeatIntervalMs ?? 500),
    CLOUDPILOT_ALLOW_PRIVATE_ENDPOINTS: '1',
    CLOUDPILOT_STARTUP_GRACE_SECONDS: '2',
    LOG_LEVEL: 'info',
    ...(databaseUrl === undefined ? {} : { DATABASE_URL: databaseUrl }),
    ...options.env,
  }
  if (databaseUrl === undefined) delete env.DATABASE_URL
  const url = `http://127.0.0.1:${port}`
  const handle: CoordinatorProcess = {
    url, port, token, dataDir, logFile,
    api: apiClient(url, token),
    proc: null as unknown as ChildProcess,
    async stop () {
      if (handle.proc.exitCode === null && handle.proc.signalCode === null) handle.proc.kill('SIGTERM')
      await exited(handle.proc)
    },
    async kill () {
      if (handle.proc.exitCode === null && handle.proc.signalCode === null) handle.proc.kill('SIGKILL')
      await exited(handle.proc)
    },
    async restart () {
      await launch()
    },
    async log () {
      return await readFile(logFile, 'utf8').catch(() => '')
    },
  }
  async function launch (): Promise<void> {
    const out = createWriteStream(logFile, { flags: 'a' })
    const proc = spawn(process.execPath, [COORDINATOR_BIN], { env, stdio: ['ignore', 'pipe', 'pipe'] })
    proc.stdout.pipe(out)
    proc.stderr.pipe(out)
    handle.proc = proc
    await waitFor(`coordinator on ${url} (log ${logFile})`, async () => {
      if (proc.exitCode !== null) throw new Error(`coordinator exited with ${proc.exitCode}: ${await handle.log()}`)
      const res = await fetch(`${url}/healthz`).catch(() => null)
      return res?.ok === true
    }, 30_000, 100)
  }
  await launch()
  t.teardown(async () => { await handle.kill() })
  return handle
}

export interface AgentProcess {
  dir: string
  configPath: string
  stateDir: string
  spoolDir: string
  serverId: string
  logFile: string
  proc: ChildProcess
  start (): Promise<void>
  stop (): Promise<number | null>
  kill (): Promise<void>
  log (): Promise<string>
}

/** Runs the real agent CLI: enroll with a fresh enrollment token, then `run` (as root with --allow-root in tests). */
export async function startAgent (t: Test, coordinator: CoordinatorProcess, options: { env?: Record<string, string>, start?: boolean } = {}): Promise<AgentProcess> {
  const dir = await tempDir(t, 'cp-agent')
  const configPath = path.join(dir, 'agent.json')
  const stateDir = path.join(dir, 'state')
  const spoolDir = path.join(dir, 'spool')
  const logFile = path.join(dir, 'agent.log')
  const env: NodeJS.ProcessEnv = { ...process.env, CLOUDPILOT_ALLOW_ROOT: '1', LOG_LEVEL: 'debug', ...options.env }
  const enrollment = await coordinator.api.post('/api/v1/enrollment-tokens', {})
  if (enrollment.status !== 201) throw new Error(`enrollment token: ${enrollment.status} ${JSON.stringify(enrollment.body)}`)
  const enrolled = await runCli(['enroll', '--coordinator', coordinator.url, '--token', enrollment.body.token, '--config', configPath, '--state-dir', stateDir, '--spool-dir', spoolDir], env)
  if (enrolled.code !== 0) throw new Error(`enroll failed (${enrolled.code}): ${enrolled.stderr}`)
  const serverId = (JSON.parse(enrolled.stdout) as { serverId: string }).serverId
  const handle: AgentProcess = {
    dir, configPath, stateDir, spoolDir, serverId, logFile,
    proc: null as unknown as ChildProcess,
    async start () {
      const out = createWriteStream(logFile, { flags: 'a' })
      const proc = spawn(process.execPath, [AGENT_BIN, 'run', '--config', configPath], { env, stdio: ['ignore', 'pipe', 'pipe'] })
      proc.stdout.pipe(out)
      proc.stderr.pipe(out)
      handle.proc = proc
    },
    async stop () {
      if (handle.proc.exitCode === null && handle.proc.signalCode === null) handle.proc.kill('SIGTERM')
      return await exited(handle.proc)
    },
    async kill () {
      if (handle.proc.exitCode === null && handle.proc.signalCode === null) handle.proc.kill('SIGKILL')
      await exited(handle.proc)
    },
    async log () {
      return await readFile(logFile, 'utf8').catch(() => '')
    },
  }
  if (options.start !== false) await handle.start()
  t.teardown(async () => { if (handle.proc !== null) await handle.kill() })
  return handle
}

export async function runCli (args: string[], env: NodeJS.ProcessEnv = { ...process.env, CLOUDPILOT_ALLOW_ROOT: '1' }): Promise<{ code: number | null, stdout: string, stderr: string }> {
  const proc = spawn(process.execPath, [AGENT_BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  proc.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
  proc.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const code = await exited(proc)
  return { code, stdout, stderr }
}

/** Waits until the server shows `online` in the API. */
export async function waitOnline (coordinator: CoordinatorProcess, serverId: string, timeoutMs = 20_000): Promise<any> {
  return await waitFor(`server ${serverId} online`, async () => {
    const r = await coordinator.api.get(`/api/v1/servers/${serverId}`)
    return r.status === 200 && r.body.status === 'online' ? r.body : undefined
  }, timeoutMs)
}

/** Waits until a backup row reaches one of the given statuses. */
export async function waitBackup (coordinator: CoordinatorProcess, backupId: string, statuses: string[], timeoutMs = 60_000): Promise<any> {
  return await waitFor(`backup ${backupId} to reach ${statuses.join('|')}`, async () => {
    const r = await coordinator.api.get(`/api/v1/backups/${backupId}`)
    return r.status === 200 && statuses.includes(r.body.status) ? r.body : undefined
  }, timeoutMs)
}
