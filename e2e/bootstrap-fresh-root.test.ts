import t from 'tap'
import path from 'node:path'
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import os from 'node:os'
import { startCoordinator, tempDir, waitOnline } from '../coordinator/test/helpers/processes.ts'
import { waitFor } from '../coordinator/test/helpers/wait-for.ts'
import { buildAgentPackage, packageFileName, sha256File } from '../deploy/src/agent-package.ts'
import { runCommand } from '../deploy/test/helpers/fresh-root.ts'
import { PRODUCT_VERSION } from '@cloudpilot/protocol'
import { freshRoot, prerequisites, stepTimer } from '../deploy/test/helpers/fresh-root.ts'
import { completedBackup, createPlan } from './helpers.ts'

// The one-line bootstrap on a fresh Debian 12 (debootstrap minbase: no Node.js, no systemd running), against a real
// coordinator on loopback: install + enroll, a files backup, upgrade by re-running the line, upgrade through the
// API (and a failed upgrade rolled back), and --uninstall.

const arch = process.arch === 'arm64' ? 'arm64' : 'x64'

t.test('the one-line install, upgrade and uninstall on a fresh Debian 12 root', async (t) => {
  const missing = await prerequisites()
  if (missing !== null) {
    if (process.env.CI === 'true') throw new Error(`fresh-root test cannot run: ${missing}`)
    t.pass(`skipped: ${missing}`)
    return
  }
  const time = stepTimer(t)

  // Empty: the coordinator builds its package (both architectures) on the first request, as in production.
  const packages = await tempDir(t, 'cp-agent-packages')
  const v1 = PRODUCT_VERSION
  const root = await time('root', async () => await freshRoot(t, (line) => t.comment(line)))
  t.comment(`root from ${root.source} in ${root.ms} ms`)
  t.notOk(await root.exec('command -v node').then((r) => r.code === 0), 'the fresh root has no Node.js')

  const coordinator = await startCoordinator(t, { env: { CLOUDPILOT_AGENT_PACKAGE_DIR: packages } })
  const line = async (args: string): Promise<{ code: number | null, stdout: string, stderr: string }> =>
    await root.exec(`set -o pipefail; curl -fsSL ${coordinator.url}/install.sh | bash -s -- ${args}`, { timeoutMs: 180_000 })

  // Something to back up that only root can read, and a local destination directory: --grant-read / --grant-write.
  const site = path.join(root.dir, 'srv/site')
  await mkdir(path.join(site, 'uploads'), { recursive: true })
  await writeFile(path.join(site, 'index.php'), '<?php echo "hello";\n')
  await writeFile(path.join(site, 'uploads/secret.txt'), 'root only\n')
  await chmod(path.join(site, 'uploads/secret.txt'), 0o600)
  await chmod(path.join(site, 'uploads'), 0o700)

  // --dry-run changes nothing.
  const token = (await coordinator.api.post('/api/v1/enrollment-tokens', { name: 'fresh-debian' })).body
  t.match(token.installCommand, `curl -fsSL ${coordinator.url}/install.sh | sudo bash -s -- --token ${token.token}`)
  const dry = await line(`--token ${token.token} --dry-run`)
  t.equal(dry.code, 0, dry.stderr)
  t.match(dry.stdout, /dry run: nothing is changed/)
  t.equal((await root.exec('getent passwd cloudpilot')).code, 2, 'dry run created no user')

  // --- install ---------------------------------------------------------------------------------------------------
  const install = await time('install (and the on-demand package build)', async () => await line(`--token ${token.token} --grant-read /srv/site --grant-write /srv/backups`))
  t.equal(install.code, 0, `install: ${install.stdout}\n${install.stderr}`)
  const serverId = /server id: ([0-9a-f-]{36})/.exec(install.stdout)?.[1]
  t.ok(serverId, 'prints the server id')
  t.match(install.stdout, /created system user cloudpilot/)
  t.match(install.stdout, /systemd is not running here/, 'says that systemd is absent and how the agent is started instead')
  t.match(install.stdout, /start-stop-daemon --start/)
  t.match(install.stdout, /the agent is connected/)

  const passwd = (await root.exec('getent passwd cloudpilot')).stdout.trim().split(':')
  t.match(passwd[6], /nologin$/, 'cloudpilot has no login shell')
  const uid = Number(passwd[2])
  t.ok(uid > 0 && uid < 1000, 'a system user')
  t.equal((await root.exec('getent group cloudpilot')).code, 0, 'group cloudpilot exists')
  const config = await stat(path.join(root.dir, 'etc/cloudpilot/agent.json'))
  t.equal(config.mode & 0o777, 0o600, 'agent.json is 0600')
  t.equal(config.uid, uid, 'agent.json belongs to cloudpilot')
  const configDir = await stat(path.join(root.dir, 'etc/cloudpilot'))
  t.equal(configDir.mode & 0o777, 0o750)
  t.equal((await stat(path.join(root.dir, 'opt/cloudpilot/agent/current/bin/node'))).mode & 0o111, 0o111, 'the agent brings its own node')
  t.notOk((await root.exec('command -v node')).code === 0, 'the system still has no node on PATH')
  const agentProcs = await root.processes()
  t.ok(agentProcs.length >= 2, 'supervisor and agent run inside the root')
  for (const pid of agentProcs) {
    const status = await readFile(`/proc/${pid}/status`, 'utf8')
    t.match(status, new RegExp(`^Uid:\\s+${uid}\\s`, 'm'), `process ${pid} runs as cloudpilot`)
  }
  const cmdlines = await Promise.all(agentProcs.map(async (pid) => await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')))
  t.notOk(cmdlines.some((c) => c.includes(token.token)), 'the token is in no process argv')

  const manifest = JSON.parse(await readFile(path.join(packages, 'manifest.json'), 'utf8'))
  t.same(Object.keys(manifest.files).sort(), ['arm64', 'x64'], 'the coordinator built both architectures')
  for (const [a, machine] of [['x64', 0x3e], ['arm64', 0xb7]] as const) {
    // ELF e_machine (offset 18): x86-64 0x3e, AArch64 0xb7.
    const head = await runCommand('sh', ['-c', `tar -xzOf ${path.join(packages, manifest.files[a].name)} ./bin/node | head -c 20 | od -An -tu1`])
    const bytes = head.stdout.trim().split(/\s+/).map(Number)
    t.same([bytes.slice(0, 4), bytes[18]], [[0x7f, 0x45, 0x4c, 0x46], machine], `the ${a} package brings a Node for ${a}`)
  }
  const server = await waitOnline(coordinator, serverId as string)
  t.equal(server.agentVersion, v1)
  t.equal(server.arch, arch)
  t.match(server.os, /Debian GNU\/Linux 12/)

  // --- a files backup to a local destination inside the root --------------------------------------------------
  const dest = await coordinator.api.post('/api/v1/destinations', { name: 'root disk', type: 'local', config: { path: '/srv/backups' } })
  t.equal(dest.status, 201)
  const planId = await createPlan(coordinator, { serverId, type: 'files', destinationId: dest.body.id, source: { paths: ['/srv/site'], exclude: [] } })
  const backup = await time('backup', async () => await completedBackup(coordinator, planId, 60_000))
  t.equal(backup.status, 'completed')
  const archive = path.join(root.dir, 'srv/backups', backup.objectKey)
  t.equal((await stat(archive)).size, backup.sizeBytes, 'the archive is on the root disk')
  const listing = await root.exec(`tar -tzf /srv/backups/${backup.objectKey}`)
  t.match(listing.stdout, /srv\/site\/uploads\/secret\.txt/, 'the root-only file was read through the granted ACL')

  // --- upgrade by re-running the line (no token needed: the enrollment is kept) ---------------------------------
  const v2 = `0.1.0-e2e.${process.pid}.2`
  await time('build v2', async () => await buildAgentPackage({ outDir: packages, version: v2, arches: [arch] }))
  const upgrade = await time('re-run', async () => await line(''))
  t.equal(upgrade.code, 0, `re-run: ${upgrade.stdout}\n${upgrade.stderr}`)
  t.match(upgrade.stdout, new RegExp(`kept the enrollment of server ${serverId}`))
  t.match(upgrade.stdout, new RegExp(`installed agent ${v2.replace(/\./g, '\\.')}`))
  t.match(upgrade.stdout, `server id: ${serverId}`)
  await waitFor('the server reports the new version', async () => {
    const r = await coordinator.api.get(`/api/v1/servers/${serverId}`)
    return r.body.agentVersion === v2 && r.body.status === 'online'
  }, 30_000)
  t.equal((await coordinator.api.get('/api/v1/servers')).body.items.length, 1, 'still one server')

  // --- upgrade through the API: the agent downloads, verifies, restarts into the new version and reports it -------
  const v3 = `0.1.0-e2e.${process.pid}.3`
  await time('build v3', async () => await buildAgentPackage({ outDir: packages, version: v3, arches: [arch] }))
  const wrongVersion = await coordinator.api.post(`/api/v1/servers/${serverId}/upgrade`, { version: '9.9.9' })
  t.equal(wrongVersion.status, 409, 'refuses a version the coordinator does not serve')
  const asked = await coordinator.api.post(`/api/v1/servers/${serverId}/upgrade`, { version: v3 })
  t.equal(asked.status, 202, JSON.stringify(asked.body))
  t.same(asked.body, { serverId, outcome: 'requested', targetVersion: v3 })
  const upgraded = await time('api upgrade', async () => await waitFor('the agent upgraded through the API', async () => {
    const r = await coordinator.api.get(`/api/v1/servers/${serverId}`)
    return r.body.upgrade?.status === 'completed' && r.body.agentVersion === v3 && r.body.status === 'online' ? r.body : undefined
  }, 90_000, 250))
  t.match(upgraded.upgrade, { fromVersion: v2, targetVersion: v3, error: null })
  t.equal(await readFile(path.join(root.dir, 'opt/cloudpilot/agent/current/VERSION'), 'utf8'), `${v3}\n`)
  // The new version prunes once it has confirmed itself (its hello may settle the upgrade a moment earlier).
  const releases = await waitFor('old releases pruned', async () => {
    const names = (await readdirNames(path.join(root.dir, 'opt/cloudpilot/agent/releases'))).sort()
    return names.length === 2 ? names : undefined
  }, 10_000).catch(async () => (await readdirNames(path.join(root.dir, 'opt/cloudpilot/agent/releases'))).sort())
  t.same(releases, [v2, v3].sort(), 'the previous release is kept, older ones removed')
  const again = await coordinator.api.post(`/api/v1/servers/${serverId}/upgrade`, {})
  t.equal(again.body.outcome, 'current', 'nothing to do when the agent already runs that version')

  // --- a new version that does not come up is rolled back, and the failure reported -------------------------------
  const v4 = `0.1.0-e2e.${process.pid}.4`
  await time('build broken v4', async () => await publishBrokenPackage(packages, v4))
  const all = await coordinator.api.post('/api/v1/servers/upgrade', {})
  t.equal(all.status, 202)
  t.same(all.body.items, [{ serverId, outcome: 'requested', targetVersion: v4 }])
  const rolledBack = await time('rollback', async () => await waitFor('the failed upgrade reported', async () => {
    const r = await coordinator.api.get(`/api/v1/servers/${serverId}`)
    return r.body.upgrade?.status === 'failed' && r.body.status === 'online' ? r.body : undefined
  }, 90_000, 250))
  t.equal(rolledBack.agentVersion, v3, 'still runs the previous version')
  t.equal(rolledBack.upgrade.error.code, 'UPGRADE_FAILED')
  t.match(rolledBack.upgrade.error.message, /did not come up.*rolled back/)
  t.equal(await readFile(path.join(root.dir, 'opt/cloudpilot/agent/current/VERSION'), 'utf8'), `${v3}\n`)

  // --- --uninstall -------------------------------------------------------------------------------------------------
  const removed = await time('uninstall', async () => await line('--uninstall'))
  t.equal(removed.code, 0, `uninstall: ${removed.stdout}\n${removed.stderr}`)
  t.match(removed.stdout, new RegExp(`revoked server ${serverId}`))
  t.equal((await root.exec('getent passwd cloudpilot')).code, 2, 'user removed')
  t.equal((await root.exec('getent group cloudpilot')).code, 2, 'group removed')
  for (const p of ['opt/cloudpilot', 'etc/cloudpilot', 'var/lib/cloudpilot', 'var/log/cloudpilot', 'tmp/cloudpilot-backups', 'usr/local/bin/cloudpilot-agent']) {
    await t.rejects(stat(path.join(root.dir, p)), `${p} removed`)
  }
  t.same(await root.processes(), [], 'nothing runs in the root any more')
  t.equal((await coordinator.api.get(`/api/v1/servers/${serverId}`)).status, 404, 'the server is revoked')
  const acl = await root.exec('getfacl -p /srv/site/uploads/secret.txt')
  t.notMatch(acl.stdout, /user:cloudpilot|user:\d+:/, 'the granted ACLs are gone')
})

async function readdirNames (dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((n) => !n.startsWith('.'))
}

/** Publishes a package of `version` that answers --version but exits at once when run: it never connects. */
async function publishBrokenPackage (dir: string, version: string): Promise<void> {
  const manifest = JSON.parse(await readFile(path.join(dir, 'manifest.json'), 'utf8'))
  const good = manifest.files[arch]
  const work = await mkdtemp(path.join(os.tmpdir(), 'cp-broken-'))
  try {
    const r = await runCommand('tar', ['-xzf', path.join(dir, good.name), '-C', work])
    if (r.code !== 0) throw new Error(r.stderr)
    await writeFile(path.join(work, 'lib/cloudpilot-agent.js'),
      `if (process.argv.includes('--version')) console.log(${JSON.stringify(version)})\nelse { console.error('this build is broken'); process.exit(1) }\n`)
    await writeFile(path.join(work, 'VERSION'), version + '\n')
    const name = packageFileName(version, arch)
    const p = await runCommand('tar', ['--owner=0', '--group=0', '-I', 'gzip -1', '-cf', path.join(dir, name), '-C', work, '.'])
    if (p.code !== 0) throw new Error(p.stderr)
    const file = { name, sha256: await sha256File(path.join(dir, name)), size: (await stat(path.join(dir, name))).size }
    await writeFile(path.join(dir, 'manifest.json.tmp'), JSON.stringify({ ...manifest, version, files: { [arch]: file } }))
    const { rename } = await import('node:fs/promises')
    await rename(path.join(dir, 'manifest.json.tmp'), path.join(dir, 'manifest.json'))
  } finally {
    await rm(work, { recursive: true, force: true })
  }
}
