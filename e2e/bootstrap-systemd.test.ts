import t from 'tap'
import path from 'node:path'
import { chmod, mkdir, readFile, stat, writeFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { startCoordinator, tempDir, waitOnline } from '../coordinator/test/helpers/processes.ts'
import { waitFor } from '../coordinator/test/helpers/wait-for.ts'
import { buildAgentPackage } from '../deploy/src/agent-package.ts'
import { bootedRoot, bootPrerequisites } from '../deploy/test/helpers/booted-root.ts'
import { stepTimer } from '../deploy/test/helpers/fresh-root.ts'
import { PRODUCT_VERSION } from '@cloudpilot/protocol'
import { completedBackup, createPlan } from './helpers.ts'

// The one-line bootstrap on a fresh Debian 12 root booted with systemd as PID 1 (systemd-nspawn --boot, host network),
// against a real coordinator on loopback: the hardened unit is installed, enabled and running as cloudpilot with its
// sandbox in effect, a files backup works inside that sandbox, re-running the line upgrades and restarts the unit,
// an upgrade through the API restarts it into the new version, and --uninstall stops, disables and removes it.

const arch = process.arch === 'arm64' ? 'arm64' : 'x64'
const UNIT_SOURCE = fileURLToPath(new URL('../deploy/systemd/cloudpilot-agent.service', import.meta.url))

t.test('the one-line install, upgrade and uninstall under systemd', async (t) => {
  const missing = await bootPrerequisites()
  if (missing !== null) {
    if (process.env.CI === 'true') throw new Error(`systemd bootstrap test cannot run: ${missing}`)
    t.pass(`skipped: ${missing}`)
    return
  }
  const time = stepTimer(t)

  const packages = await tempDir(t, 'cp-agent-packages')
  const v1 = PRODUCT_VERSION
  const [root] = await Promise.all([
    time('root and boot', async () => await bootedRoot(t, (line) => t.comment(line))),
    time('build v1', async () => await buildAgentPackage({ outDir: packages, arches: [arch] })),
  ])
  t.comment(`root from ${root.source} in ${root.rootMs} ms, booted in ${root.bootMs} ms`)
  t.equal((await root.exec('cat /proc/1/comm')).stdout.trim(), 'systemd', 'systemd is PID 1 in the root')

  const coordinator = await startCoordinator(t, { env: { CLOUDPILOT_AGENT_PACKAGE_DIR: packages } })
  const line = async (args: string): Promise<{ code: number | null, stdout: string, stderr: string }> =>
    await root.exec(`set -o pipefail; curl -fsSL ${coordinator.url}/install.sh | bash -s -- ${args}`, { timeoutMs: 180_000 })
  const sh = async (script: string): Promise<string> => {
    const r = await root.exec(script)
    if (r.code !== 0) throw new Error(`${script}: exit ${r.code}: ${r.stderr}`)
    return r.stdout.trim()
  }
  const show = async (props: string[]): Promise<Record<string, string>> => {
    const out = await sh(`systemctl show ${props.map((p) => `-p ${p}`).join(' ')} cloudpilot-agent.service`)
    return Object.fromEntries(out.split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]))
  }
  const journal = async (): Promise<string> => (await root.exec('journalctl -u cloudpilot-agent --no-pager -n 40')).stdout

  // Something only root can read, and a local destination directory: --grant-read / --grant-write (a drop-in adds it
  // to ReadWritePaths, or ProtectSystem=strict would keep the agent from writing there).
  const site = path.join(root.dir, 'srv/site')
  await mkdir(path.join(site, 'uploads'), { recursive: true })
  await writeFile(path.join(site, 'index.php'), '<?php echo "hello";\n')
  await writeFile(path.join(site, 'uploads/secret.txt'), 'root only\n')
  await chmod(path.join(site, 'uploads/secret.txt'), 0o600)
  await chmod(path.join(site, 'uploads'), 0o700)

  // --- install ---------------------------------------------------------------------------------------------------
  const token = (await coordinator.api.post('/api/v1/enrollment-tokens', { name: 'systemd-debian' })).body
  const v2 = `0.1.0-e2e.${process.pid}.2`
  const buildV2 = time('build v2', async () => await buildAgentPackage({ outDir: path.join(packages, 'next'), version: v2, arches: [arch] }))
  const install = await time('install', async () => await line(`--token ${token.token} --grant-read /srv/site --grant-write /srv/backups`))
  t.equal(install.code, 0, `install: ${install.stdout}\n${install.stderr}`)
  const serverId = /server id: ([0-9a-f-]{36})/.exec(install.stdout)?.[1] as string
  t.ok(serverId, 'prints the server id')
  t.match(install.stdout, /installed and started the systemd unit cloudpilot-agent\.service/)
  t.notMatch(install.stdout, /systemd is not running here|start-stop-daemon/, 'no fallback supervisor')
  t.match(install.stdout, /the agent is connected/)

  t.equal(await readFile(path.join(root.dir, 'etc/systemd/system/cloudpilot-agent.service'), 'utf8'), await readFile(UNIT_SOURCE, 'utf8'), 'the shipped unit is installed as is')
  t.match(await readFile(path.join(root.dir, 'etc/systemd/system/cloudpilot-agent.service.d/writable-paths.conf'), 'utf8'), /^ReadWritePaths=\/srv\/backups$/m)
  t.equal((await root.exec('systemctl is-active cloudpilot-agent')).stdout.trim(), 'active', `active: ${await journal()}`)
  t.equal((await root.exec('systemctl is-enabled cloudpilot-agent')).stdout.trim(), 'enabled')
  t.notOk(await stat(path.join(root.dir, 'run/cloudpilot-agent.pid')).then(() => true, () => false), 'no fallback pidfile')

  const uid = Number((await sh('getent passwd cloudpilot')).split(':')[2])
  t.ok(uid > 0 && uid < 1000, 'cloudpilot is a system user')
  const props = await show(['User', 'Group', 'NoNewPrivileges', 'ProtectSystem', 'ProtectHome', 'PrivateDevices', 'PrivateTmp',
    'ProtectKernelTunables', 'ProtectKernelModules', 'ProtectControlGroups', 'RestrictNamespaces', 'RestrictSUIDSGID',
    'LockPersonality', 'CapabilityBoundingSet', 'AmbientCapabilities', 'RestrictAddressFamilies', 'SystemCallArchitectures',
    'ReadWritePaths', 'UMask', 'Restart', 'MainPID', 'FragmentPath', 'DropInPaths', 'UnitFileState'])
  t.match(props, {
    User: 'cloudpilot', Group: 'cloudpilot', NoNewPrivileges: 'yes', ProtectSystem: 'strict', ProtectHome: 'read-only',
    PrivateDevices: 'yes', PrivateTmp: 'no', ProtectKernelTunables: 'yes', ProtectKernelModules: 'yes', ProtectControlGroups: 'yes',
    RestrictNamespaces: 'yes', RestrictSUIDSGID: 'yes', LockPersonality: 'yes', CapabilityBoundingSet: '', AmbientCapabilities: '',
    SystemCallArchitectures: 'native', UMask: '0077', Restart: 'always',
    FragmentPath: '/etc/systemd/system/cloudpilot-agent.service', UnitFileState: 'enabled',
  }, 'systemd loaded the hardened unit')
  t.same(props.RestrictAddressFamilies?.split(' ').sort(), ['AF_INET', 'AF_INET6', 'AF_UNIX'], 'RestrictAddressFamilies')
  t.match(props.DropInPaths, /writable-paths\.conf/)
  for (const p of ['/var/lib/cloudpilot', '/opt/cloudpilot/agent', '/tmp/cloudpilot-backups', '/srv/backups']) {
    t.ok(props.ReadWritePaths?.split(' ').some((w) => w.replace(/^-/, '') === p), `ReadWritePaths has ${p}`)
  }

  // The sandbox is in effect for the running process, not only in the unit's text.
  const mainPid = Number(props.MainPID)
  t.ok(mainPid > 1, 'the unit has a main process')
  const status = await sh(`cat /proc/${mainPid}/status`)
  t.match(status, new RegExp(`^Uid:\\s+${uid}\\s+${uid}\\s+${uid}\\s+${uid}$`, 'm'), 'the main process runs as cloudpilot')
  t.match(status, /^NoNewPrivs:\s+1$/m, 'no new privileges')
  t.match(status, /^CapBnd:\s+0{16}$/m, 'empty capability bounding set')
  t.match(status, /^CapEff:\s+0{16}$/m, 'no effective capabilities')
  t.match(status, /^Seccomp:\s+2$/m, 'a seccomp filter (address families, native syscalls only)')
  const mounts = parseMountinfo(await sh(`cat /proc/${mainPid}/mountinfo`))
  t.equal(mounts.get('/'), 'ro', 'the root file system is read-only for the agent (ProtectSystem=strict)')
  for (const p of ['/var/lib/cloudpilot', '/opt/cloudpilot/agent', '/srv/backups']) t.equal(mounts.get(p), 'rw', `${p} is writable for the agent`)
  t.equal(mounts.get('/proc/sys'), 'ro', '/proc/sys is read-only (ProtectKernelTunables)')
  t.ok(mounts.has('/dev'), 'a private /dev (PrivateDevices)')
  const cmdline = await sh(`tr '\\0' ' ' < /proc/${mainPid}/cmdline`)
  t.notMatch(cmdline, token.token, 'the token is in no process argv')

  const server = await waitOnline(coordinator, serverId)
  t.equal(server.agentVersion, v1)
  t.match(server.os, /Debian GNU\/Linux 12/)

  // --- a files backup from inside the sandbox to the granted local destination -------------------------------------
  const dest = await coordinator.api.post('/api/v1/destinations', { name: 'root disk', type: 'local', config: { path: '/srv/backups' } })
  t.equal(dest.status, 201)
  const planId = await createPlan(coordinator, { serverId, type: 'files', destinationId: dest.body.id, source: { paths: ['/srv/site'], exclude: [] } })
  const backup = await time('backup', async () => await completedBackup(coordinator, planId, 60_000))
  t.equal(backup.status, 'completed')
  t.match(await sh(`tar -tzf /srv/backups/${backup.objectKey}`), /srv\/site\/uploads\/secret\.txt/, 'the root-only file was read through the granted ACL')

  // --- upgrade by re-running the line: the unit is restarted into the new version -------------------------------
  await buildV2
  await publishNext(packages)
  const before = await show(['MainPID', 'ExecMainStartTimestampMonotonic', 'InvocationID'])
  const upgrade = await time('re-run', async () => await line(''))
  t.equal(upgrade.code, 0, `re-run: ${upgrade.stdout}\n${upgrade.stderr}`)
  t.match(upgrade.stdout, new RegExp(`kept the enrollment of server ${serverId}`))
  t.match(upgrade.stdout, new RegExp(`installed agent ${v2.replace(/\./g, '\\.')}`))
  t.match(upgrade.stdout, /installed and started the systemd unit/)
  const after = await show(['MainPID', 'ExecMainStartTimestampMonotonic', 'InvocationID', 'ActiveState'])
  t.equal(after.ActiveState, 'active', `active after the re-run: ${await journal()}`)
  t.not(after.InvocationID, before.InvocationID, 'the unit was restarted (a new invocation)')
  t.not(after.MainPID, before.MainPID, 'a new main process')
  t.ok(Number(after.ExecMainStartTimestampMonotonic) > Number(before.ExecMainStartTimestampMonotonic), 'started later')
  await waitFor('the server reports the new version', async () => {
    const r = await coordinator.api.get(`/api/v1/servers/${serverId}`)
    return r.body.agentVersion === v2 && r.body.status === 'online'
  }, 30_000)
  t.equal((await coordinator.api.get('/api/v1/servers')).body.items.length, 1, 'still one server')

  // --- upgrade through the API: the agent switches `current` inside its sandbox and systemd restarts it -------------
  const v3 = `0.1.0-e2e.${process.pid}.3`
  await time('build v3', async () => await buildAgentPackage({ outDir: path.join(packages, 'next'), version: v3, arches: [arch] }))
  await publishNext(packages)
  const asked = await coordinator.api.post(`/api/v1/servers/${serverId}/upgrade`, { version: v3 })
  t.equal(asked.status, 202, JSON.stringify(asked.body))
  const upgraded = await time('api upgrade', async () => await waitFor('the agent upgraded through the API', async () => {
    const r = await coordinator.api.get(`/api/v1/servers/${serverId}`)
    return r.body.upgrade?.status === 'completed' && r.body.agentVersion === v3 && r.body.status === 'online' ? r.body : undefined
  }, 90_000, 250)).catch(async (err: Error) => { throw new Error(`${err.message}\n${await journal()}`) })
  t.match(upgraded.upgrade, { fromVersion: v2, targetVersion: v3, error: null })
  t.equal(await readFile(path.join(root.dir, 'opt/cloudpilot/agent/current/VERSION'), 'utf8'), `${v3}\n`)
  const restarted = await show(['ActiveState', 'InvocationID', 'NRestarts'])
  t.equal(restarted.ActiveState, 'active')
  t.ok(Number(restarted.NRestarts) >= 1, 'systemd restarted the agent into the new version (Restart=always)')

  // --- --uninstall: revoked, stopped, disabled, removed ---------------------------------------------------------
  const removed = await time('uninstall', async () => await line('--uninstall'))
  t.equal(removed.code, 0, `uninstall: ${removed.stdout}\n${removed.stderr}`)
  t.match(removed.stdout, new RegExp(`revoked server ${serverId}`))
  t.match(removed.stdout, /removed the systemd unit/)
  t.equal((await root.exec('systemctl is-active cloudpilot-agent')).stdout.trim(), 'inactive', 'the unit is stopped')
  const files = await root.exec('systemctl list-unit-files --no-legend cloudpilot-agent.service')
  t.equal(files.stdout.trim(), '', 'systemd no longer knows the unit file')
  t.equal((await show(['LoadState'])).LoadState, 'not-found', 'the unit is gone after daemon-reload')
  t.equal((await root.exec('find /etc/systemd -name "cloudpilot*"')).stdout.trim(), '', 'no unit, drop-in or enablement link left')
  for (const p of ['opt/cloudpilot', 'etc/cloudpilot', 'var/lib/cloudpilot', 'var/log/cloudpilot', 'tmp/cloudpilot-backups', 'usr/local/bin/cloudpilot-agent', 'etc/tmpfiles.d/cloudpilot.conf']) {
    await t.rejects(stat(path.join(root.dir, p)), `${p} removed`)
  }
  t.equal((await root.exec('getent passwd cloudpilot')).code, 2, 'user removed')
  t.equal((await root.exec('getent group cloudpilot')).code, 2, 'group removed')
  const owned = await root.exec(`for s in /proc/[0-9]*/status; do grep -qE '^Uid:\\s+${uid}\\s' "$s" 2>/dev/null && echo "$s"; done; true`)
  t.equal(owned.stdout.trim(), '', 'no process of the former cloudpilot uid runs')
  t.equal((await coordinator.api.get(`/api/v1/servers/${serverId}`)).status, 404, 'the server is revoked')
  t.notMatch((await root.exec('getfacl -p /srv/site/uploads/secret.txt')).stdout, /user:cloudpilot|user:\d+:/, 'the granted ACLs are gone')
  t.equal((await root.exec('systemctl list-units --failed --no-legend --plain')).stdout.includes('cloudpilot'), false, 'no failed cloudpilot unit left')
  t.equal((await root.exec('systemctl is-system-running')).stdout.trim(), root.bootState, 'the system is as healthy as after boot')
})

/** Mount point -> 'ro' | 'rw' from /proc/<pid>/mountinfo (the last mount on a point wins). */
function parseMountinfo (text: string): Map<string, 'ro' | 'rw'> {
  const mounts = new Map<string, 'ro' | 'rw'>()
  for (const l of text.split('\n')) {
    const f = l.split(' ')
    const point = f[4]
    const options = f[5]
    if (point === undefined || options === undefined) continue
    mounts.set(point.replace(/\\040/g, ' '), options.split(',').includes('ro') ? 'ro' : 'rw')
  }
  return mounts
}

/** Makes the package built in <dir>/next the one the coordinator serves (manifest.json written last). */
async function publishNext (dir: string): Promise<void> {
  const { readdir, rename } = await import('node:fs/promises')
  const next = path.join(dir, 'next')
  for (const name of await readdir(next)) if (name !== 'manifest.json') await rename(path.join(next, name), path.join(dir, name))
  await rename(path.join(next, 'manifest.json'), path.join(dir, 'manifest.json'))
}
