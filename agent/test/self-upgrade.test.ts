import t from 'tap'
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import http from 'node:http'
import { chmod, mkdir, mkdtemp, readFile, readdir, readlink, rm, symlink, writeFile } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import pino from 'pino'
import type { AgentUpgradeFrame, OutgoingAgentFrame } from '@cloudpilot/protocol'
import { SelfUpgrade } from '../src/self-upgrade.ts'
import { runCommand } from '../../deploy/test/helpers/fresh-root.ts'

const START_SCRIPT = fileURLToPath(new URL('../../deploy/agent-start.sh', import.meta.url))
const log = pino({ level: 'silent' })

/** An install.sh layout whose releases are stand-ins: bin/node is a shell script answering --version. */
async function layout (t: { teardown: (fn: () => Promise<void>) => void }, versions: string[], current: string): Promise<string> {
  const home = await mkdtemp(path.join(os.tmpdir(), 'cp-agent-home-'))
  t.teardown(async () => { await rm(home, { recursive: true, force: true }) })
  for (const v of versions) await release(path.join(home, 'releases', v), v)
  await symlink(`releases/${current}`, path.join(home, 'current'))
  return home
}

async function release (dir: string, version: string, runExit = 0): Promise<void> {
  await mkdir(path.join(dir, 'bin'), { recursive: true })
  await mkdir(path.join(dir, 'lib'), { recursive: true })
  await writeFile(path.join(dir, 'bin/node'), `#!/bin/sh\nif [ "$2" = --version ]; then echo ${version}; exit 0; fi\necho "running ${version} $*"\nexit ${runExit}\n`)
  await chmod(path.join(dir, 'bin/node'), 0o755)
  await writeFile(path.join(dir, 'lib/cloudpilot-agent.js'), '')
  await writeFile(path.join(dir, 'VERSION'), `${version}\n`)
}

async function tarball (version: string): Promise<Buffer> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'cp-pkg-'))
  try {
    await release(dir, version)
    return await new Promise((resolve, reject) => {
      const p = spawn('tar', ['-czf', '-', '-C', dir, '.'], { stdio: ['ignore', 'pipe', 'inherit'] })
      const chunks: Buffer[] = []
      p.stdout.on('data', (c: Buffer) => chunks.push(c))
      p.once('close', (code) => code === 0 ? resolve(Buffer.concat(chunks)) : reject(new Error(`tar ${code}`)))
    })
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

async function serve (t: { teardown: (fn: () => void) => void }, files: Record<string, Buffer>): Promise<string> {
  const server = http.createServer((req, res) => {
    const body = files[req.url ?? '']
    if (body === undefined) { res.statusCode = 404; res.end(); return }
    res.end(body)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.close() })
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

function upgrader (home: string | null, version: string, coordinatorUrl: string, options: { busy?: () => boolean } = {}) {
  const sent: OutgoingAgentFrame[] = []
  let restarts = 0
  const u = new SelfUpgrade({
    home, version, coordinatorUrl, log,
    send: (f) => { sent.push(f); return true },
    busy: options.busy ?? (() => false),
    restart: () => { restarts++ },
  })
  return { u, sent, restarts: () => restarts }
}

async function settled (sent: OutgoingAgentFrame[]): Promise<any> {
  for (let i = 0; i < 200; i++) {
    const last = sent.at(-1) as any
    if (last !== undefined && last.status !== 'in_progress') return last
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
  throw new Error(`no final status: ${JSON.stringify(sent)}`)
}

function frame (version: string, body: Buffer, overrides: Partial<AgentUpgradeFrame> = {}): AgentUpgradeFrame {
  return { type: 'agent.upgrade', id: 'upg-1', version, url: `/agent/files/p-${version}.tar.gz`, sha256: createHash('sha256').update(body).digest('hex'), size: body.length, ...overrides }
}

t.test('an agent not installed by install.sh reports that it cannot upgrade itself', async (t) => {
  const { u, sent } = upgrader(null, '1.0.0', 'http://127.0.0.1:1')
  u.handle(frame('2.0.0', Buffer.from('x')))
  const last = await settled(sent)
  t.match(last, { type: 'agent.upgrade.status', status: 'failed', fromVersion: '1.0.0', toVersion: '2.0.0', error: { code: 'UPGRADE_FAILED', message: /not installed by install\.sh/ } })
})

t.test('a download that does not match its sha256 is refused: nothing switched, nothing left behind', async (t) => {
  const home = await layout(t, ['1.0.0'], '1.0.0')
  const good = await tarball('2.0.0')
  const url = await serve(t, { '/agent/files/p-2.0.0.tar.gz': Buffer.concat([good, Buffer.from('tampered')]) })
  const { u, sent, restarts } = upgrader(home, '1.0.0', url)
  u.handle(frame('2.0.0', good))
  const last = await settled(sent)
  t.match(last, { status: 'failed', error: { code: 'UPGRADE_FAILED', message: /larger than the announced|does not match/ } })
  t.equal(await readlink(path.join(home, 'current')), 'releases/1.0.0')
  t.same(await readdir(path.join(home, 'releases')), ['1.0.0'], 'no download or staging left')
  t.equal(restarts(), 0)

  const wrongHash = upgrader(home, '1.0.0', url)
  const tampered = Buffer.concat([good, Buffer.from('tampered')])
  wrongHash.u.handle(frame('2.0.0', tampered, { sha256: '0'.repeat(64) }))
  t.match(await settled(wrongHash.sent), { status: 'failed', error: { message: /sha256 [0-9a-f]{64}; expected .* sha256 0{64}/ } })
  t.equal(await readlink(path.join(home, 'current')), 'releases/1.0.0')

  const foreign = upgrader(home, '1.0.0', url)
  foreign.u.handle(frame('2.0.0', good, { url: 'http://evil.example/p.tar.gz' }))
  t.match(await settled(foreign.sent), { status: 'failed', error: { message: /only from the coordinator/ } })
})

t.test('a verified package is test-started, switched to once idle, confirmed by the new version; old releases pruned', async (t) => {
  const home = await layout(t, ['0.9.0', '1.0.0'], '1.0.0')
  const pkg = await tarball('2.0.0')
  const url = await serve(t, { '/agent/files/p-2.0.0.tar.gz': pkg })
  let busy = true
  const { u, sent, restarts } = upgrader(home, '1.0.0', url, { busy: () => busy })
  u.handle(frame('2.0.0', pkg))
  await new Promise((resolve) => setTimeout(resolve, 500))
  t.equal(restarts(), 0, 'waits while a job runs')
  t.equal(await readlink(path.join(home, 'current')), 'releases/1.0.0')
  busy = false
  for (let i = 0; i < 100 && restarts() === 0; i++) await new Promise((resolve) => setTimeout(resolve, 50))
  t.equal(restarts(), 1, 'restarts once idle')
  t.equal(await readlink(path.join(home, 'current')), 'releases/2.0.0')
  t.equal(await readFile(path.join(home, 'upgrade-pending'), 'utf8'), 'from=1.0.0\nto=2.0.0\nprevious=1.0.0\n')
  t.match(sent[0], { status: 'in_progress' })

  // The new version starts (the start script counts the attempt) and, once connected, confirms.
  const started = await runStart(home)
  t.match(started.stdout, /running 2\.0\.0 .*run/)
  t.equal(await readFile(path.join(home, 'upgrade-attempts'), 'utf8'), '1\n')
  const next = upgrader(home, '2.0.0', url)
  await next.u.onWelcome()
  t.match(next.sent, [{ type: 'agent.upgrade.status', status: 'completed', fromVersion: '1.0.0', toVersion: '2.0.0' }])
  t.same((await readdir(home)).sort(), ['current', 'releases'])
  t.same((await readdir(path.join(home, 'releases'))).sort(), ['1.0.0', '2.0.0'], 'current and previous kept, older removed')
})

t.test('the start script rolls back a version that does not come up, and the previous version reports it', async (t) => {
  const home = await layout(t, ['1.0.0'], '1.0.0')
  await release(path.join(home, 'releases', '2.0.0'), '2.0.0', 1)
  await rm(path.join(home, 'current'))
  await symlink('releases/2.0.0', path.join(home, 'current'))
  await writeFile(path.join(home, 'upgrade-pending'), 'from=1.0.0\nto=2.0.0\nprevious=1.0.0\n')
  for (const attempt of [1, 2]) {
    const r = await runStart(home)
    t.equal(r.code, 1, `attempt ${attempt} runs the new version, which fails`)
    t.match(r.stdout, /running 2\.0\.0/)
  }
  const third = await runStart(home)
  t.match(third.stderr, /did not come up after 2 starts; rolling back to 1\.0\.0/)
  t.match(third.stdout, /running 1\.0\.0/)
  t.equal(third.code, 0)
  t.equal(await readlink(path.join(home, 'current')), 'releases/1.0.0')
  const previous = upgrader(home, '1.0.0', 'http://127.0.0.1:1')
  await previous.u.onWelcome()
  t.match(previous.sent, [{ status: 'failed', fromVersion: '1.0.0', toVersion: '2.0.0', error: { code: 'UPGRADE_FAILED', message: /did not come up.*rolled back to 1\.0\.0/ } }])
  t.same((await readdir(home)).sort(), ['current', 'releases'], 'markers cleared')
})

async function runStart (home: string): Promise<{ code: number | null, stdout: string, stderr: string }> {
  return await runCommand('sh', [START_SCRIPT], { env: { PATH: '/usr/bin:/bin', CLOUDPILOT_AGENT_HOME: home, INVOCATION_ID: 'test' } })
}
