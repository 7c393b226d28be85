/**
 * `npm start`: the coordinator on its embedded default (PGlite in ./data, port 8080), plus an agent for this
 * machine enrolled against it, so a backup can be run at once. Ctrl-C stops both.
 * Set CLOUDPILOT_NO_LOCAL_AGENT=1 to start the coordinator alone (same as `npm run coordinator`).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))
const dataDir = path.resolve(process.env.DATA_DIR ?? path.join(root, 'data'))
const port = process.env.PORT ?? '8080'
const base = `http://127.0.0.1:${port}`
const agentDir = path.join(dataDir, 'local-agent')
const agentConfig = path.join(agentDir, 'agent.json')
const children: ChildProcess[] = []

function start (file: string, args: string[], env: NodeJS.ProcessEnv): ChildProcess {
  const child = spawn(process.execPath, [file, ...args], { env: { ...process.env, ...env }, stdio: 'inherit' })
  children.push(child)
  child.once('exit', (code) => {
    if (!stopping) {
      process.stderr.write(`${path.basename(file)} exited (${code ?? 'signal'}); stopping\n`)
      stop()
    }
  })
  return child
}

let stopping = false
function stop (): void {
  if (stopping) return
  stopping = true
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM')
  setTimeout(() => process.exit(0), 3000).unref()
}
process.on('SIGINT', stop)
process.on('SIGTERM', stop)

async function waitHealthy (): Promise<void> {
  for (let i = 0; i < 300; i++) {
    const ok = await fetch(`${base}/healthz`).then((r) => r.ok, () => false)
    if (ok) return
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
  throw new Error(`the coordinator did not come up on ${base}`)
}

async function main (): Promise<void> {
  start(path.join(root, 'coordinator/src/bin/cloudpilot-coordinator.ts'), [], { DATA_DIR: dataDir, PORT: port, LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn' })
  await waitHealthy()
  if (process.env.CLOUDPILOT_NO_LOCAL_AGENT === '1') return
  const token = process.env.CLOUDPILOT_ADMIN_TOKEN ?? (await readFile(path.join(dataDir, 'admin-token'), 'utf8')).trim()
  const agentEnv = { CLOUDPILOT_ALLOW_ROOT: process.getuid?.() === 0 ? '1' : '', LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn' }
  const agentBin = path.join(root, 'agent/src/bin/cloudpilot-agent.ts')
  if (!existsSync(agentConfig)) {
    const res = await fetch(`${base}/api/v1/enrollment-tokens`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'this machine' }) })
    const { token: enrollment } = await res.json() as { token: string }
    const enroll = spawn(process.execPath, [agentBin, 'enroll', '--coordinator', base, '--token', enrollment, '--config', agentConfig,
      '--state-dir', path.join(agentDir, 'state'), '--spool-dir', path.join(agentDir, 'spool')], { env: { ...process.env, ...agentEnv }, stdio: ['ignore', 'ignore', 'inherit'] })
    const code = await new Promise((resolve) => enroll.once('exit', resolve))
    if (code !== 0) throw new Error('enrolling the local agent failed')
  }
  const serverId = (JSON.parse(await readFile(agentConfig, 'utf8')) as { serverId: string }).serverId
  start(agentBin, ['run', '--config', agentConfig], agentEnv)
  if (process.getuid?.() === 0) process.stdout.write('(running as root: the local agent runs with --allow-root; on servers it runs as the cloudpilot user)\n')
  process.stdout.write([
    '',
    `A local agent for this machine is enrolled as server ${serverId}. Try a backup:`,
    '',
    `  export TOKEN=${token} API=${base}/api/v1`,
    '  curl -s -H "Authorization: Bearer $TOKEN" $API/servers',
    `  PLAN=$(curl -s -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' $API/plans \\`,
    `    -d '{"name":"etc","serverId":"${serverId}","type":"files","source":{"paths":["/etc/hostname","/etc/os-release"]}}' | sed 's/.*"id":"\\([^"]*\\)".*/\\1/')`,
    '  BACKUP=$(curl -s -X POST -H "Authorization: Bearer $TOKEN" $API/plans/$PLAN/run | sed \'s/.*"id":"\\([^"]*\\)".*/\\1/\')',
    '  curl -s -H "Authorization: Bearer $TOKEN" $API/backups/$BACKUP',
    '  curl -s -H "Authorization: Bearer $TOKEN" -o backup.tar.gz $API/backups/$BACKUP/download && tar -tzf backup.tar.gz',
    '',
  ].join('\n') + '\n')
}

main().catch((err: unknown) => {
  process.stderr.write(`npm start: ${(err as Error).message}\n`)
  stop()
  process.exitCode = 1
})
