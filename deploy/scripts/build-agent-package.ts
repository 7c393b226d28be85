/**
 * Builds the agent package: `npx node deploy/scripts/build-agent-package.ts --out DIR [--version V] [--arch x64,arm64]`
 * Writes cloudpilot-agent-<version>-linux-<arch>.tar.gz and manifest.json into DIR (the coordinator's
 * CLOUDPILOT_AGENT_PACKAGE_DIR). The Node runtimes come from the npm packages node-linux-<arch> and are cached in
 * ~/.cache/cloudpilot/node (or --node-cache DIR).
 */
import { parseArgs } from 'node:util'
import { AGENT_ARCHES, buildAgentPackage, type AgentArch } from '../src/agent-package.ts'

const { values } = parseArgs({
  options: {
    out: { type: 'string' },
    version: { type: 'string' },
    arch: { type: 'string' },
    'node-version': { type: 'string' },
    'node-cache': { type: 'string' },
  },
})
if (values.out === undefined) {
  process.stderr.write('usage: build-agent-package.ts --out DIR [--version V] [--arch x64,arm64] [--node-version 24.x.y] [--node-cache DIR]\n')
  process.exit(2)
}
const arches = (values.arch?.split(',') ?? [...AGENT_ARCHES]) as AgentArch[]
for (const a of arches) if (!(AGENT_ARCHES as readonly string[]).includes(a)) throw new Error(`unknown arch ${a} (${AGENT_ARCHES.join(', ')})`)
const started = Date.now()
const manifest = await buildAgentPackage({
  outDir: values.out,
  arches,
  ...(values.version === undefined ? {} : { version: values.version }),
  ...(values['node-version'] === undefined ? {} : { nodeVersion: values['node-version'] }),
  ...(values['node-cache'] === undefined ? {} : { cacheDir: values['node-cache'] }),
  log: (line) => process.stderr.write(line + '\n'),
})
process.stderr.write(`built in ${Date.now() - started} ms\n`)
process.stdout.write(JSON.stringify(manifest, null, 2) + '\n')
