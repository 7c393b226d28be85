/**
 * The agent as servers run it: the package the coordinator serves (esbuild bundle + its own Node), built from
 * this checkout for this machine's architecture, unpacked into the bench's temp dir, started the way
 * deploy/agent-start.sh starts it (its Node, MALLOC_ARENA_MAX=2). Returns an executable for --agent-bin.
 */
import { chmod, mkdir, readdir, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { spawnSync } from 'node:child_process'
import { buildAgentPackage, type AgentArch } from '../../deploy/src/agent-package.ts'

export async function preparePackagedAgent (tmp: string): Promise<string> {
  const arch: AgentArch = process.arch === 'arm64' ? 'arm64' : 'x64'
  const out = path.join(tmp, 'agent-package')
  const started = Date.now()
  const manifest = await buildAgentPackage({ outDir: out, arches: [arch], log: () => {} })
  const file = manifest.files[arch]
  if (file === undefined) throw new Error(`the agent package for ${arch} was not built`)
  const home = path.join(tmp, 'agent-installed')
  await mkdir(home, { recursive: true })
  const untar = spawnSync('tar', ['-xzf', path.join(out, file.name), '-C', home])
  if (untar.status !== 0) throw new Error(`unpacking ${file.name}: ${untar.stderr.toString()}`)
  const entries = await readdir(home)
  if (!entries.includes('bin') || !entries.includes('lib')) throw new Error(`unexpected package layout: ${entries.join(', ')}`)
  const launcher = path.join(home, 'cloudpilot-agent')
  await writeFile(launcher, `#!/bin/sh\nexport MALLOC_ARENA_MAX="\${MALLOC_ARENA_MAX:-2}"\nexec "${home}/bin/node" "${home}/lib/cloudpilot-agent.js" "$@"\n`)
  await chmod(launcher, 0o755)
  process.stderr.write(`agent: package ${manifest.version} (Node ${manifest.nodeVersion}, ${arch}) built and unpacked in ${Date.now() - started} ms\n`)
  return launcher
}
