/**
 * Real processes the scenarios measure: the S3 emulator, a coordinator (`cloudpilot-coordinator`), agents
 * (`cloudpilot-agent enroll` then `run`). Each registers its own cleanup.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createWriteStream } from 'node:fs'
import { mkdir, readFile } from 'node:fs/promises'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { apiClient, type ApiClient } from '../../coordinator/test/helpers/api-client.ts'
import { freePort } from '../../coordinator/test/helpers/processes.ts'
import { waitFor } from '../../coordinator/test/helpers/wait-for.ts'
import { runCommand } from '../../deploy/test/helpers/fresh-root.ts'
import { onCleanup } from './cleanup.ts'

export { waitFor }

export const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const COORDINATOR_BIN = path.join(ROOT, 'coordinator/src/bin/cloudpilot-coordinator.ts')
const AGENT_BIN = path.join(ROOT, 'agent/src/bin/cloudpilot-agent.ts')


export function exited (proc: ChildProcess): Promise<number | null> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve(proc.exitCode)
  return new Promise((resolve) => proc.once('exit', (code) => resolve(code)))
}

/** SIGTERM, then SIGKILL after graceMs. */
export async function stopProcess (proc: ChildProcess, graceMs = 5000): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return
  proc.kill('SIGTERM')
  const timer = setTimeout(() => proc.kill('SIGKILL'), graceMs)
  await exited(proc)
  clearTimeout(timer)
}

export interface S3Emulator {
  endpoint: string
  bucket: string
  region: string
  accessKeyId: string
  secretAccessKey: string
  directory: string
  proc: ChildProcess
}

export async function startS3Emulator (): Promise<S3Emulator> {
  const proc = spawn(process.execPath, ['--openssl-legacy-provider', path.join(ROOT, 'bench/lib/s3-emulator-process.ts')], { stdio: ['ignore', 'pipe', 'inherit'] })
  onCleanup('S3 emulator', async () => { await stopProcess(proc) })
  const line = await new Promise<string>((resolve, reject) => {
    const rl = createInterface({ input: proc.stdout as NodeJS.ReadableStream })
    rl.once('line', (l) => { rl.close(); resolve(l) })
    proc.once('exit', (code) => reject(new Error(`S3 emulator exited with ${code}`)))
  })
  return { ...(JSON.parse(line) as Omit<S3Emulator, 'proc'>), proc }
}

export interface Coordinator {
  url: string
  token: string
  api: ApiClient
  proc: ChildProcess
  dataDir: string
  logFile: string
  stop (): Promise<void>
}

export interface CoordinatorOptions {
  dataDir: string
  /** Unset: embedded PGlite in dataDir. */
  databaseUrl?: string
  env?: Record<string, string>
  /** prlimit the process's open files (fleet). */
  maxOpenFiles?: number
  /** Node options before the script (e.g. --cpu-prof, --import a probe). */
  nodeArgs?: string[]
}

export async function startCoordinator (options: CoordinatorOptions): Promise<Coordinator> {
  await mkdir(options.dataDir, { recursive: true })
  const port = await freePort()
  const token = `cpk_bench_${Math.random().toString(36).slice(2)}${Math.random().toString(36).slice(2)}`
  const logFile = path.join(options.dataDir, 'coordinator.log')
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PORT: String(port),
    HOST: '127.0.0.1',
    DATA_DIR: options.dataDir,
    CLOUDPILOT_ADMIN_TOKEN: token,
    CLOUDPILOT_ALLOW_PRIVATE_ENDPOINTS: '1',
    LOG_LEVEL: 'warn',
    ...options.env,
  }
  delete env.NODE_OPTIONS
  if (options.databaseUrl === undefined) delete env.DATABASE_URL
  else env.DATABASE_URL = options.databaseUrl
  const out = createWriteStream(logFile, { flags: 'a' })
  const args = [...(options.nodeArgs ?? []), COORDINATOR_BIN]
  const proc = options.maxOpenFiles === undefined
    ? spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn('prlimit', [`--nofile=${options.maxOpenFiles}`, '--', process.execPath, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] })
  proc.stdout?.pipe(out)
  proc.stderr?.pipe(out)
  const url = `http://127.0.0.1:${port}`
  const stop = onCleanup('coordinator', async () => { await stopProcess(proc, 10_000) })
  await waitFor(`coordinator on ${url} (log ${logFile})`, async () => {
    if (proc.exitCode !== null) throw new Error(`coordinator exited with ${proc.exitCode}: ${await readFile(logFile, 'utf8').catch(() => '')}`)
    const res = await fetch(`${url}/healthz`).catch(() => null)
    return res?.ok === true
  }, 60_000, 100)
  return { url, token, api: apiClient(url, token), proc, dataDir: options.dataDir, logFile, stop }
}

export interface Agent {
  serverId: string
  spoolDir: string
  stateDir: string
  logFile: string
  proc: ChildProcess
  stop (): Promise<void>
}

/**
 * How to start the agent: by default the repository's sources (`node agent/src/bin/cloudpilot-agent.ts`); a
 * `.js`/`.mjs`/`.ts` file runs with this Node, anything else is executed as it is (e.g. a packaged agent).
 */
export function agentCommand (bin: string | null): { file: string, args: string[] } {
  if (bin === null) return { file: process.execPath, args: [AGENT_BIN] }
  const resolved = path.resolve(bin)
  return /\.(m?js|ts)$/.test(resolved) ? { file: process.execPath, args: [resolved] } : { file: resolved, args: [] }
}

async function runCli (command: { file: string, args: string[] }, args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null, stdout: string, stderr: string }> {
  return await runCommand(command.file, [...command.args, ...args], { env })
}

/** Enrolls a real agent with a fresh enrollment token and starts `cloudpilot-agent run`; waits until online. */
export async function startAgent (coordinator: Coordinator, dir: string, bin: string | null = null): Promise<Agent> {
  const command = agentCommand(bin)
  await mkdir(dir, { recursive: true })
  const configPath = path.join(dir, 'agent.json')
  const stateDir = path.join(dir, 'state')
  const spoolDir = path.join(dir, 'spool')
  const logFile = path.join(dir, 'agent.log')
  const env: NodeJS.ProcessEnv = { ...process.env, CLOUDPILOT_ALLOW_ROOT: '1', LOG_LEVEL: 'warn' }
  delete env.NODE_OPTIONS
  const enrollment = await coordinator.api.post('/api/v1/enrollment-tokens', {})
  if (enrollment.status !== 201) throw new Error(`enrollment token: ${enrollment.status} ${JSON.stringify(enrollment.body)}`)
  const enrolled = await runCli(command, ['enroll', '--coordinator', coordinator.url, '--token', enrollment.body.token, '--config', configPath, '--state-dir', stateDir, '--spool-dir', spoolDir], env)
  if (enrolled.code !== 0) throw new Error(`enroll failed (${enrolled.code}): ${enrolled.stderr}`)
  const serverId = (JSON.parse(enrolled.stdout) as { serverId: string }).serverId
  const out = createWriteStream(logFile, { flags: 'a' })
  const proc = spawn(command.file, [...command.args, 'run', '--config', configPath], { env, stdio: ['ignore', 'pipe', 'pipe'] })
  proc.stdout.pipe(out)
  proc.stderr.pipe(out)
  const stop = onCleanup('agent', async () => { await stopProcess(proc, 10_000) })
  await waitFor(`agent ${serverId} online`, async () => {
    if (proc.exitCode !== null) throw new Error(`agent exited with ${proc.exitCode}: ${await readFile(logFile, 'utf8').catch(() => '')}`)
    const r = await coordinator.api.get(`/api/v1/servers/${serverId}`)
    return r.status === 200 && r.body.status === 'online'
  }, 30_000, 100)
  return { serverId, spoolDir, stateDir, logFile, proc, stop }
}
