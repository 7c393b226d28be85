import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { access, chmod, copyFile, mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

/**
 * The agent package: one tarball per architecture, `cloudpilot-agent-<version>-linux-<x64|arm64>.tar.gz`, holding
 *
 *   bin/node               the Node runtime the agent brings (npm `node-linux-<arch>`, same major as the project's)
 *   bin/cloudpilot-agent   launcher: runs lib/cloudpilot-agent.js with bin/node
 *   lib/                   the agent bundled by esbuild (storage SDKs split into chunks that load on first use)
 *   share/                 the start/supervise scripts and the systemd unit the installer puts in place
 *   VERSION
 *
 * and `manifest.json` beside them: version, and per arch the file name, sha256 and size. The coordinator serves both
 * (GET /agent/manifest.json, GET /agent/files/<name>); the installer and the agent's self-upgrade verify the sha256.
 */

export const AGENT_ARCHES = ['x64', 'arm64'] as const
export type AgentArch = typeof AGENT_ARCHES[number]

export interface AgentPackageFile {
  name: string
  sha256: string
  size: number
}

export interface AgentPackageManifest {
  version: string
  nodeVersion: string
  builtAt: string
  files: Partial<Record<AgentArch, AgentPackageFile>>
}

export interface BuildOptions {
  /** Where the tarballs and manifest.json are written. */
  outDir: string
  /** Package version (default: the product version). */
  version?: string
  arches?: readonly AgentArch[]
  /** Version of the npm `node-linux-<arch>` package to ship (default: the running Node's). */
  nodeVersion?: string
  /** Cache of the downloaded Node packages (default ~/.cache/cloudpilot/node). */
  cacheDir?: string
  log?: (line: string) => void
}

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
export const MANIFEST_NAME = 'manifest.json'

export function packageFileName (version: string, arch: AgentArch): string {
  return `cloudpilot-agent-${version}-linux-${arch}.tar.gz`
}

export function defaultNodeCacheDir (): string {
  return path.join(os.homedir(), '.cache', 'cloudpilot', 'node')
}

export async function readManifest (dir: string): Promise<AgentPackageManifest | null> {
  try {
    return JSON.parse(await readFile(path.join(dir, MANIFEST_NAME), 'utf8')) as AgentPackageManifest
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw err
  }
}

/** Builds the agent package for the given arches into outDir and writes manifest.json last (atomically). */
export async function buildAgentPackage (options: BuildOptions): Promise<AgentPackageManifest> {
  const { PRODUCT_VERSION } = await import('@cloudpilot/protocol')
  const version = options.version ?? PRODUCT_VERSION
  if (!/^[0-9A-Za-z.+-]{1,64}$/.test(version)) throw new Error(`invalid package version ${JSON.stringify(version)}`)
  const arches = options.arches ?? AGENT_ARCHES
  const nodeVersion = options.nodeVersion ?? process.versions.node
  const cacheDir = options.cacheDir ?? defaultNodeCacheDir()
  const log = options.log ?? (() => {})
  await mkdir(options.outDir, { recursive: true })
  const work = await mkdtemp(path.join(os.tmpdir(), 'cp-agent-pkg-'))
  try {
    const lib = path.join(work, 'lib')
    const started = Date.now()
    await bundleAgent(lib, version)
    log(`bundled the agent (${Date.now() - started} ms)`)
    const files: Partial<Record<AgentArch, AgentPackageFile>> = {}
    for (const arch of arches) {
      const tgz = await nodePackage(arch, nodeVersion, cacheDir, log)
      const stage = path.join(work, `stage-${arch}`)
      await mkdir(path.join(stage, 'bin'), { recursive: true })
      await run('tar', ['-xzf', tgz, '-C', stage, '--strip-components=1', 'package/bin/node', 'package/LICENSE'])
      await rename(path.join(stage, 'LICENSE'), path.join(stage, 'NODE-LICENSE'))
      await run('cp', ['-R', lib, path.join(stage, 'lib')])
      await mkdir(path.join(stage, 'share'), { recursive: true })
      await copyFile(path.join(ROOT, 'deploy/package/cloudpilot-agent.sh'), path.join(stage, 'bin/cloudpilot-agent'))
      await chmod(path.join(stage, 'bin/cloudpilot-agent'), 0o755)
      for (const [from, to] of [['deploy/agent-start.sh', 'agent-start.sh'], ['deploy/agent-supervise.sh', 'agent-supervise.sh'], ['deploy/systemd/cloudpilot-agent.service', 'cloudpilot-agent.service']] as const) {
        await copyFile(path.join(ROOT, from), path.join(stage, 'share', to))
      }
      await writeFile(path.join(stage, 'VERSION'), version + '\n')
      const name = packageFileName(version, arch)
      const tmp = path.join(options.outDir, `.${name}.tmp-${process.pid}`)
      const packStarted = Date.now()
      await run('tar', ['--owner=0', '--group=0', '--numeric-owner', '-czf', tmp, '-C', stage, '.'])
      await rename(tmp, path.join(options.outDir, name))
      files[arch] = { name, sha256: await sha256File(path.join(options.outDir, name)), size: (await stat(path.join(options.outDir, name))).size }
      log(`packed ${name} (${Date.now() - packStarted} ms)`)
    }
    const manifest: AgentPackageManifest = { version, nodeVersion, builtAt: new Date().toISOString(), files }
    const tmp = path.join(options.outDir, `.${MANIFEST_NAME}.tmp-${process.pid}`)
    await writeFile(tmp, JSON.stringify(manifest, null, 2) + '\n')
    await rename(tmp, path.join(options.outDir, MANIFEST_NAME))
    return manifest
  } finally {
    await rm(work, { recursive: true, force: true })
  }
}

async function bundleAgent (outDir: string, version: string): Promise<void> {
  const esbuild = await import('esbuild')
  await esbuild.build({
    entryPoints: { 'cloudpilot-agent': path.join(ROOT, 'agent/src/bin/cloudpilot-agent.ts') },
    bundle: true,
    platform: 'node',
    target: 'node24',
    format: 'esm',
    // Destination drivers are dynamic imports: each lands in its own chunk, loaded only when used.
    splitting: true,
    outdir: outDir,
    chunkNames: 'chunks/[name]-[hash]',
    // Optional native helpers of ssh2 (it falls back to pure JS without them).
    external: ['cpu-features', '*.node'],
    define: { __CLOUDPILOT_AGENT_VERSION__: JSON.stringify(version) },
    // CommonJS dependencies bundled into ESM still call require() for Node built-ins.
    banner: { js: "import { createRequire as __cpCreateRequire } from 'node:module'; const require = __cpCreateRequire(import.meta.url);" },
    legalComments: 'none',
    logLevel: 'error',
  })
}

/** The npm package `node-linux-<arch>@<version>`, fetched once with `npm pack` into the cache. */
async function nodePackage (arch: AgentArch, version: string, cacheDir: string, log: (line: string) => void): Promise<string> {
  await mkdir(cacheDir, { recursive: true })
  const file = path.join(cacheDir, `node-linux-${arch}-${version}.tgz`)
  if (await exists(file)) return file
  const started = Date.now()
  const tmp = await mkdtemp(path.join(cacheDir, '.pack-'))
  try {
    await run('npm', ['pack', `node-linux-${arch}@${version}`, '--pack-destination', tmp, '--silent'])
    await rename(path.join(tmp, `node-linux-${arch}-${version}.tgz`), file)
  } finally {
    await rm(tmp, { recursive: true, force: true })
  }
  log(`fetched node-linux-${arch}@${version} (${Date.now() - started} ms)`)
  return file
}

async function exists (file: string): Promise<boolean> {
  try { await access(file); return true } catch { return false }
}

export async function sha256File (file: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer)
  return hash.digest('hex')
}

function run (cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    p.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
    p.once('error', reject)
    p.once('close', (code) => code === 0 ? resolve() : reject(new Error(`${cmd} ${args.join(' ')} exited with ${code}: ${stderr.trim()}`)))
  })
}
