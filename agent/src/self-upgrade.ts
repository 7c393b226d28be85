import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { createWriteStream } from 'node:fs'
import { mkdir, readFile, readlink, readdir, rename, rm, symlink, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { Readable, Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { CloudPilotError, SECOND, toErrorData, type AgentUpgradeFrame, type OutgoingAgentFrame } from '@cloudpilot/protocol'
import type { Logger } from './logger.ts'

/** Exit code of an agent that switched to a new release: its supervisor (systemd, or the installer's) starts it again. */
export const UPGRADE_EXIT_CODE = 75

const DOWNLOAD_TIMEOUT_MS = 30 * 60 * SECOND
const TEST_START_TIMEOUT_MS = 60 * SECOND
const IDLE_POLL_MS = 2 * SECOND

/**
 * Self-upgrade of an agent installed by install.sh. The install layout (CLOUDPILOT_AGENT_HOME, default
 * /opt/cloudpilot/agent, owned by the cloudpilot user):
 *
 *   releases/<version>/   one unpacked package each (bin/node, lib/cloudpilot-agent.js, ...)
 *   current               symlink to releases/<version>: what the start script runs
 *   upgrade-pending       from=, to=, previous=: written before `current` is switched
 *   upgrade-attempts      starts of the new version so far (the start script counts; after 2 it rolls back)
 *   upgrade-failed        what the start script leaves after a rollback
 *
 * On `agent.upgrade` the agent downloads the package, checks its size and sha256, unpacks it, test-starts it
 * (`--version` must answer the expected version), waits until no job runs, records upgrade-pending, switches
 * `current` atomically and exits with 75. The new version confirms itself once connected (removing the marker) and
 * reports `completed`; if it never gets there, the start script restores the previous release, which reports `failed`.
 */
export class SelfUpgrade {
  readonly #home: string | null
  readonly #version: string
  readonly #coordinatorUrl: string
  readonly #log: Logger
  readonly #send: (frame: OutgoingAgentFrame) => boolean
  readonly #busy: () => boolean
  readonly #restart: () => void
  #running: string | null = null
  #controller = new AbortController()

  constructor (options: {
    home: string | null
    version: string
    coordinatorUrl: string
    log: Logger
    send: (frame: OutgoingAgentFrame) => boolean
    /** Whether jobs are running (the switch waits until none is). */
    busy: () => boolean
    /** Stops the agent with UPGRADE_EXIT_CODE. */
    restart: () => void
  }) {
    this.#home = options.home
    this.#version = options.version
    this.#coordinatorUrl = options.coordinatorUrl
    this.#log = options.log
    this.#send = options.send
    this.#busy = options.busy
    this.#restart = options.restart
  }

  /** After each welcome: confirm a new version, or report the rollback of a failed one. */
  async onWelcome (): Promise<void> {
    if (this.#home === null) return
    const home = this.#home
    const pending = await readMarker(path.join(home, 'upgrade-pending'))
    if (pending !== null && pending.to === this.#version) {
      await rm(path.join(home, 'upgrade-pending'), { force: true })
      await rm(path.join(home, 'upgrade-attempts'), { force: true })
      this.#log.info({ from: pending.from, to: pending.to }, 'upgrade completed')
      await this.#prune(new Set([this.#version, pending.previous ?? ''])).catch((err: unknown) => this.#log.warn({ err }, 'could not remove old releases'))
      this.#send({ type: 'agent.upgrade.status', status: 'completed', fromVersion: pending.from ?? 'unknown', toVersion: this.#version })
      return
    }
    const failed = await readMarker(path.join(home, 'upgrade-failed'))
    if (failed !== null) {
      const to = failed.to ?? 'unknown'
      this.#log.warn({ to, runningVersion: this.#version }, 'the upgrade did not come up and was rolled back')
      const error = new CloudPilotError('UPGRADE_FAILED', `agent ${to} did not come up (it exited before connecting, twice); rolled back to ${this.#version}`, {
        hint: 'Check the agent log of the failed start (journalctl -u cloudpilot-agent or /var/log/cloudpilot/agent.log), fix the cause and upgrade again.',
      })
      if (this.#send({ type: 'agent.upgrade.status', status: 'failed', fromVersion: this.#version, toVersion: to, error: error.toData() })) {
        await rm(path.join(home, 'upgrade-failed'), { force: true })
      }
    }
  }

  handle (frame: AgentUpgradeFrame): void {
    if (this.#running !== null) {
      this.#log.info({ version: frame.version, running: this.#running }, 'an upgrade is already in progress')
      return
    }
    this.#running = frame.version
    this.#upgrade(frame).catch((err: unknown) => {
      const data = toErrorData(err, 'UPGRADE_FAILED')
      this.#log.error({ err, version: frame.version }, 'upgrade failed')
      this.#send({ type: 'agent.upgrade.status', status: 'failed', fromVersion: this.#version, toVersion: frame.version, error: data })
    }).finally(() => { this.#running = null })
  }

  stop (): void {
    this.#controller.abort()
  }

  async #upgrade (frame: AgentUpgradeFrame): Promise<void> {
    const from = this.#version
    if (frame.version === from) {
      this.#send({ type: 'agent.upgrade.status', status: 'completed', fromVersion: from, toVersion: frame.version })
      return
    }
    if (this.#home === null) {
      throw new CloudPilotError('UPGRADE_FAILED', 'this agent was not installed by install.sh (CLOUDPILOT_AGENT_HOME is not set): it cannot upgrade itself', {
        hint: 'Upgrade it the way it was installed, or re-install it with the install command.',
      })
    }
    const home = this.#home
    const releases = path.join(home, 'releases')
    this.#send({ type: 'agent.upgrade.status', status: 'in_progress', fromVersion: from, toVersion: frame.version })
    this.#log.info({ from, to: frame.version }, 'upgrading')
    await mkdir(releases, { recursive: true })
    const tag = `${frame.version}-${process.pid}`
    const download = path.join(releases, `.download-${tag}.tar.gz`)
    const staging = path.join(releases, `.staging-${tag}`)
    try {
      await this.#download(frame, download)
      await mkdir(staging, { recursive: true })
      await run('tar', ['-xzf', download, '-C', staging, '--no-same-owner'], this.#controller.signal)
      const answered = (await run(path.join(staging, 'bin/node'), [path.join(staging, 'lib/cloudpilot-agent.js'), '--version'], this.#controller.signal)).trim()
      if (answered !== frame.version) throw new CloudPilotError('UPGRADE_FAILED', `the new package answers --version with ${JSON.stringify(answered.slice(0, 200))}, expected ${frame.version}`)
      const release = path.join(releases, frame.version)
      const currentTarget = await readlink(path.join(home, 'current')).catch(() => null)
      if (currentTarget === null) throw new CloudPilotError('UPGRADE_FAILED', `${home}/current is not a symlink: not an install.sh layout`)
      if (path.resolve(home, currentTarget) === release) throw new CloudPilotError('UPGRADE_FAILED', `${frame.version} is already the current release`)
      await rm(release, { recursive: true, force: true })
      await rename(staging, release)
      await this.#waitIdle()
      await writeFile(path.join(home, 'upgrade-pending'), `from=${from}\nto=${frame.version}\nprevious=${path.basename(currentTarget)}\n`)
      await rm(path.join(home, 'upgrade-attempts'), { force: true })
      await rm(path.join(home, 'upgrade-failed'), { force: true })
      const link = path.join(home, `current.upgrade-${process.pid}`)
      await rm(link, { force: true })
      await symlink(`releases/${frame.version}`, link)
      await rename(link, path.join(home, 'current'))
      this.#log.info({ from, to: frame.version }, 'switched to the new release; restarting into it')
      this.#restart()
    } finally {
      await rm(download, { force: true })
      await rm(staging, { recursive: true, force: true })
    }
  }

  async #download (frame: AgentUpgradeFrame, file: string): Promise<void> {
    const url = new URL(frame.url, this.#coordinatorUrl + '/')
    const coordinator = new URL(this.#coordinatorUrl)
    if (url.origin !== coordinator.origin) throw new CloudPilotError('UPGRADE_FAILED', `refusing to download an upgrade from ${url.origin}: only from the coordinator`)
    let response: Response
    try {
      response = await fetch(url, { signal: AbortSignal.any([this.#controller.signal, AbortSignal.timeout(DOWNLOAD_TIMEOUT_MS)]) })
    } catch (err) {
      throw new CloudPilotError('UPGRADE_FAILED', `cannot download ${url.pathname}: ${(err as Error).message}`, { cause: err })
    }
    if (!response.ok || response.body === null) throw new CloudPilotError('UPGRADE_FAILED', `downloading ${url.pathname} answered HTTP ${response.status}`)
    const hash = createHash('sha256')
    let bytes = 0
    const count = new Transform({
      transform (chunk: Buffer, _encoding, callback) {
        hash.update(chunk)
        bytes += chunk.length
        if (bytes > frame.size) { callback(new CloudPilotError('UPGRADE_FAILED', `the package is larger than the announced ${frame.size} bytes`)); return }
        callback(null, chunk)
      },
    })
    await pipeline(Readable.fromWeb(response.body as import('node:stream/web').ReadableStream), count, createWriteStream(file, { mode: 0o600 }), { signal: this.#controller.signal })
    const sha256 = hash.digest('hex')
    if (bytes !== frame.size || sha256 !== frame.sha256) {
      throw new CloudPilotError('UPGRADE_FAILED', `the downloaded package does not match: ${bytes} bytes, sha256 ${sha256}; expected ${frame.size} bytes, sha256 ${frame.sha256}`)
    }
  }

  async #waitIdle (): Promise<void> {
    let logged = false
    while (this.#busy()) {
      if (!logged) { this.#log.info('waiting for running jobs to finish before restarting into the new version'); logged = true }
      await new Promise((resolve) => setTimeout(resolve, IDLE_POLL_MS))
      if (this.#controller.signal.aborted) throw new CloudPilotError('UPGRADE_FAILED', 'the agent stopped before it could switch to the new version')
    }
  }

  /** Keeps the current and the previous release (for a manual rollback); removes older ones. */
  async #prune (keep: Set<string>): Promise<void> {
    if (this.#home === null) return
    const current = await readlink(path.join(this.#home, 'current')).catch(() => null)
    if (current !== null) keep.add(path.basename(current))
    for (const name of await readdir(path.join(this.#home, 'releases'))) {
      if (!name.startsWith('.') && !keep.has(name)) await rm(path.join(this.#home, 'releases', name), { recursive: true, force: true })
    }
  }
}

async function readMarker (file: string): Promise<{ from?: string, to?: string, previous?: string } | null> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch {
    return null
  }
  const out: Record<string, string> = {}
  for (const line of text.split('\n')) {
    const i = line.indexOf('=')
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1).trim()
  }
  return out
}

function run (cmd: string, args: string[], signal: AbortSignal): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], signal, timeout: TEST_START_TIMEOUT_MS, env: { PATH: '/usr/local/bin:/usr/bin:/bin' } })
    let stdout = ''
    let stderr = ''
    p.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
    p.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
    p.once('error', (err) => reject(new CloudPilotError('UPGRADE_FAILED', `${path.basename(cmd)}: ${err.message}`, { cause: err })))
    p.once('close', (code) => code === 0 ? resolve(stdout) : reject(new CloudPilotError('UPGRADE_FAILED', `${path.basename(cmd)} ${args.map((a) => path.basename(a)).join(' ')} exited with ${code}: ${stderr.trim().slice(0, 1000)}`)))
  })
}
