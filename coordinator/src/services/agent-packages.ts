import { createReadStream } from 'node:fs'
import { stat } from 'node:fs/promises'
import path from 'node:path'
import type { Logger } from 'pino'
import { CloudPilotError } from '@cloudpilot/protocol'
import type { AgentPackageFile, AgentPackageManifest } from '@cloudpilot/deploy'

const ARCH_ALIASES: Record<string, string> = { x64: 'x64', x86_64: 'x64', amd64: 'x64', arm64: 'arm64', aarch64: 'arm64' }

/**
 * The agent packages the coordinator serves (GET /agent/manifest.json, /agent/files/<name>) and points agents at for
 * upgrades. They live in one directory (CLOUDPILOT_AGENT_PACKAGE_DIR, default DATA_DIR/agent-packages); the manifest
 * is read again whenever it changes on disk, so dropping a new build there publishes it. An empty directory is filled
 * on first request by building the package from this checkout (esbuild + the npm `node-linux-*` runtimes).
 */
export class AgentPackages {
  readonly dir: string
  readonly #log: Logger
  #cached: { mtimeMs: number, manifest: AgentPackageManifest } | null = null
  #building: Promise<void> | null = null

  constructor (options: { dir: string, log: Logger }) {
    this.dir = options.dir
    this.#log = options.log
  }

  async manifest (): Promise<AgentPackageManifest> {
    const file = path.join(this.dir, 'manifest.json')
    let info = await stat(file).catch(() => null)
    if (info === null) {
      await this.#build()
      info = await stat(file).catch(() => null)
      if (info === null) throw new CloudPilotError('AGENT_PACKAGE_UNAVAILABLE')
    }
    if (this.#cached?.mtimeMs !== info.mtimeMs) {
      const { readManifest } = await import('@cloudpilot/deploy')
      const manifest = await readManifest(this.dir)
      if (manifest === null) throw new CloudPilotError('AGENT_PACKAGE_UNAVAILABLE')
      this.#cached = { mtimeMs: info.mtimeMs, manifest }
    }
    return this.#cached.manifest
  }

  /** The package file for an architecture as the agent or `uname -m` names it, or null when none was built. */
  async fileFor (arch: string): Promise<{ version: string, file: AgentPackageFile } | null> {
    const manifest = await this.manifest()
    const key = ARCH_ALIASES[arch]
    const file = key === undefined ? undefined : manifest.files[key as keyof AgentPackageManifest['files']]
    return file === undefined ? null : { version: manifest.version, file }
  }

  /** Opens a file listed in the manifest (and only those). */
  async open (name: string): Promise<{ stream: NodeJS.ReadableStream, size: number } | null> {
    const manifest = await this.manifest()
    const entry = Object.values(manifest.files).find((f) => f?.name === name)
    if (entry === undefined) return null
    const file = path.join(this.dir, entry.name)
    const info = await stat(file).catch(() => null)
    if (info === null) return null
    return { stream: createReadStream(file), size: info.size }
  }

  /** `version <v>` then one `<arch> <file> <sha256> <size>` line per arch: what install.sh reads without a JSON parser. */
  async manifestText (): Promise<string> {
    const m = await this.manifest()
    const lines = [`version ${m.version}`]
    for (const [arch, f] of Object.entries(m.files)) if (f !== undefined) lines.push(`${arch} ${f.name} ${f.sha256} ${f.size}`)
    return lines.join('\n') + '\n'
  }

  async #build (): Promise<void> {
    this.#building ??= (async () => {
      this.#log.info({ dir: this.dir }, 'no agent package yet: building it')
      try {
        const { buildAgentPackage } = await import('@cloudpilot/deploy')
        await buildAgentPackage({ outDir: this.dir, log: (line) => this.#log.info(line) })
      } catch (err) {
        this.#log.error({ err }, 'building the agent package failed')
      } finally {
        this.#building = null
      }
    })()
    await this.#building
  }
}

const instances = new WeakMap<object, AgentPackages>()

/** One AgentPackages per coordinator context. */
export function agentPackagesOf (ctx: { config: { agentPackageDir: string }, log: Logger }): AgentPackages {
  let p = instances.get(ctx)
  if (p === undefined) {
    p = new AgentPackages({ dir: ctx.config.agentPackageDir, log: ctx.log.child({ component: 'agent-packages' }) })
    instances.set(ctx, p)
  }
  return p
}
