import t from 'tap'
import http from 'node:http'
import https from 'node:https'
import { access, chmod, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { runCommand } from './helpers/fresh-root.ts'

const DEPLOY = fileURLToPath(new URL('../', import.meta.url))
const INSTALL_SH = path.join(DEPLOY, 'install.sh')
const BASE_ENV = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8', HOME: os.tmpdir() }

async function tmp (t: { teardown: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'cp-install-test-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  return dir
}

async function osRelease (dir: string, id: string, version: string, pretty: string): Promise<string> {
  const file = path.join(dir, `os-release-${id}-${version}`)
  await writeFile(file, `PRETTY_NAME="${pretty}"\nNAME="${pretty}"\nID=${id}\nVERSION_ID="${version}"\n`)
  return file
}

/** Runs the script the way the one-liner does: piped into `bash -s -- args`. */
async function pipeToBash (script: string | Buffer, args: string[], env: Record<string, string> = {}): Promise<{ code: number | null, stdout: string, stderr: string }> {
  return await runCommand('bash', ['-s', '--', ...args], { env: { ...BASE_ENV, ...env }, input: script.toString(), timeoutMs: 30_000 })
}

t.test('shellcheck passes on deploy/*.sh and the packaged launcher', async (t) => {
  const files = [
    ...(await readdir(DEPLOY)).filter((f) => f.endsWith('.sh')).map((f) => path.join(DEPLOY, f)),
    ...(await readdir(path.join(DEPLOY, 'package'))).filter((f) => f.endsWith('.sh')).map((f) => path.join(DEPLOY, 'package', f)),
  ]
  t.ok(files.some((f) => f.endsWith('install.sh')))
  const found = await runCommand('shellcheck', ['--version']).catch(() => null)
  if (found === null || found.code !== 0) {
    if (process.env.CI === 'true') throw new Error('shellcheck is missing (apt-get install -y shellcheck)')
    t.pass('skipped: shellcheck is not installed')
    return
  }
  const r = await runCommand('shellcheck', ['--severity=style', ...files])
  t.equal(r.code, 0, r.stdout + r.stderr)
})

t.test('a truncated download runs nothing', async (t) => {
  const script = await readFile(INSTALL_SH)
  // The complete script does run (--help prints the usage): the probe would notice a cut that runs something.
  const full = await pipeToBash(script, ['--help'])
  t.equal(full.code, 0)
  t.match(full.stdout, /Usage: install\.sh/)

  // Every proper prefix of the script (the script without its final newline is complete, not a prefix).
  const complete = script.toString().trimEnd().length
  const cuts = new Set<number>()
  for (let n = 0; n < complete; n += 89) cuts.add(n)
  for (let n = Math.max(0, complete - 64); n < complete; n++) cuts.add(n)
  let ran = 0
  for (const n of [...cuts].sort((a, b) => a - b)) {
    const r = await pipeToBash(script.subarray(0, n), ['--help'])
    if (r.stdout !== '' || /Usage|dry run|cloudpilot: (?!error: the script is incomplete)/.test(r.stderr)) {
      ran++
      t.fail(`the first ${n} bytes did something: ${JSON.stringify((r.stdout + r.stderr).slice(0, 300))}`)
    }
  }
  t.equal(ran, 0, `none of ${cuts.size} truncations (every 89th byte, and each of the last 64) ran anything`)
  t.equal(script.toString().trimEnd().split('\n').at(-1), 'main "$@" --script-complete', 'the last line is the only call')
})

t.test('an unsupported OS or architecture is refused with a clear message, before anything is done', async (t) => {
  const dir = await tmp(t)
  const script = await readFile(INSTALL_SH)
  const cases: Array<[string, string, string]> = [['centos', '9', 'CentOS Stream 9'], ['debian', '11', 'Debian GNU/Linux 11 (bullseye)'], ['ubuntu', '20.04', 'Ubuntu 20.04.6 LTS'], ['alpine', '3.20', 'Alpine Linux v3.20']]
  for (const [id, version, pretty] of cases) {
    const r = await pipeToBash(script, ['--token', 'cpe_x', '--coordinator', 'http://127.0.0.1:1'], { CLOUDPILOT_OS_RELEASE: await osRelease(dir, id, version, pretty) })
    t.equal(r.code, 1, `${pretty} refused`)
    t.match(r.stderr, `unsupported operating system: ${pretty}`)
    t.match(r.stderr, /Supported: Debian 12, Ubuntu 22\.04 and 24\.04\. Nothing was changed\./)
  }
  const missing = await pipeToBash(script, ['--token', 'cpe_x'], { CLOUDPILOT_OS_RELEASE: path.join(dir, 'none') })
  t.equal(missing.code, 1)
  t.match(missing.stderr, /unsupported operating system/)

  const debian = await osRelease(dir, 'debian', '12', 'Debian GNU/Linux 12 (bookworm)')
  for (const machine of ['armv7l', 'i686', 'riscv64', 's390x']) {
    const r = await pipeToBash(script, ['--token', 'cpe_x', '--coordinator', 'http://127.0.0.1:1'], { CLOUDPILOT_OS_RELEASE: debian, CLOUDPILOT_UNAME_M: machine })
    t.equal(r.code, 1, `${machine} refused`)
    t.match(r.stderr, `unsupported architecture: ${machine}. Supported: x86_64 and aarch64 (arm64). Nothing was changed.`)
  }
  for (const [id, version, pretty] of [['ubuntu', '22.04', 'Ubuntu 22.04.4 LTS'], ['ubuntu', '24.04', 'Ubuntu 24.04.1 LTS'], ['debian', '12', 'Debian GNU/Linux 12 (bookworm)']] as const) {
    for (const machine of ['x86_64', 'aarch64']) {
      const r = await pipeToBash(script, ['--token', 'cpe_x', '--coordinator', 'http://127.0.0.1:1', '--dry-run'], { CLOUDPILOT_OS_RELEASE: await osRelease(dir, id, version, pretty), CLOUDPILOT_UNAME_M: machine })
      t.equal(r.code, 0, `${pretty} ${machine} accepted: ${r.stderr}`)
      t.match(r.stdout, `platform: ${pretty}, linux-${machine === 'x86_64' ? 'x64' : 'arm64'}`)
    }
  }
})

t.test('--dry-run prints the plan and changes nothing', async (t) => {
  const dir = await tmp(t)
  const script = await readFile(INSTALL_SH)
  const env = { CLOUDPILOT_OS_RELEASE: await osRelease(dir, 'debian', '12', 'Debian GNU/Linux 12 (bookworm)') }
  const before = await snapshot()
  const r = await pipeToBash(script, ['--token', 'cpe_dry', '--coordinator', 'http://127.0.0.1:1', '--dry-run', '--grant-read', '/var/www'], env)
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, /dry run: nothing is changed/)
  t.match(r.stdout, /create the system group and user cloudpilot \(no login shell\)/)
  t.match(r.stdout, /enroll with the token \(passed on stdin\) and write \/etc\/cloudpilot\/agent\.json \(mode 0600, owner cloudpilot\)/)
  t.match(r.stdout, /verify its sha256/)
  t.match(r.stdout, /grant cloudpilot read access to \/var\/www/)
  t.notMatch(r.stdout + r.stderr, /cpe_dry/, 'the token is not echoed')
  t.same(await snapshot(), before, 'no user, group or file was created')

  const uninstall = await pipeToBash(script, ['--uninstall', '--dry-run'], env)
  t.equal(uninstall.code, 0, uninstall.stderr)
  t.match(uninstall.stdout, /remove \/opt\/cloudpilot, \/etc\/cloudpilot/)
  t.same(await snapshot(), before)

  const noToken = await pipeToBash(script, ['--coordinator', 'http://127.0.0.1:1', '--dry-run'], env)
  t.equal(noToken.code, 1)
  t.match(noToken.stderr, /a first install needs an enrollment token/)
  const noUrl = await pipeToBash(script, ['--token', 'cpe_x'], env)
  t.equal(noUrl.code, 1)
  t.match(noUrl.stderr, /no coordinator URL/)
})

t.test('a package whose sha256 does not match the published one is refused before anything is installed', async (t) => {
  if (process.getuid?.() !== 0) { t.pass('skipped: the installer needs root to get that far'); return }
  const dir = await tmp(t)
  const script = await readFile(INSTALL_SH)
  const payload = Buffer.from('not the package that was published')
  const server = http.createServer((req, res) => {
    if (req.url === '/agent/manifest.txt') {
      res.end(`version 9.9.9\nx64 cloudpilot-agent-9.9.9-linux-x64.tar.gz ${'0'.repeat(64)} ${payload.length}\narm64 cloudpilot-agent-9.9.9-linux-arm64.tar.gz ${'0'.repeat(64)} ${payload.length}\n`)
    } else if (req.url?.startsWith('/agent/files/') === true) {
      res.end(payload)
    } else {
      res.statusCode = 404
      res.end()
    }
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.close() })
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  // Safety net for this test: if verification were broken, these stand-ins stop the script at its first change.
  const bin = path.join(dir, 'bin')
  const marker = path.join(dir, 'changed')
  await runCommand('mkdir', ['-p', bin])
  for (const tool of ['useradd', 'groupadd', 'install']) {
    await writeFile(path.join(bin, tool), `#!/bin/sh\necho "$0 $*" >> ${marker}\nexit 1\n`)
    await chmod(path.join(bin, tool), 0o755)
  }
  const r = await pipeToBash(script, ['--token', 'cpe_x', '--coordinator', url], {
    CLOUDPILOT_OS_RELEASE: await osRelease(dir, 'debian', '12', 'Debian GNU/Linux 12 (bookworm)'),
    PATH: `${bin}:${BASE_ENV.PATH}`,
  })
  t.equal(r.code, 1)
  t.match(r.stderr, /sha256 of cloudpilot-agent-9\.9\.9-linux-(x64|arm64)\.tar\.gz is [0-9a-f]{64}, the coordinator published 0{64}: refusing to install it/)
  await t.rejects(access(marker), 'nothing was created')
})

t.test('--ca-fingerprint: only the pinned certificate is accepted', async (t) => {
  if (process.getuid?.() !== 0) { t.pass('skipped: the installer needs root to get that far'); return }
  const dir = await tmp(t)
  const script = await readFile(INSTALL_SH)
  const gen = await runCommand('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', path.join(dir, 'key.pem'),
    '-out', path.join(dir, 'cert.pem'), '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'])
  t.equal(gen.code, 0, gen.stderr)
  const fp = (await runCommand('openssl', ['x509', '-in', path.join(dir, 'cert.pem'), '-noout', '-fingerprint', '-sha256'])).stdout.trim().replace(/^.*=/, '')
  const payload = Buffer.from('not the published package')
  const server = https.createServer({ key: await readFile(path.join(dir, 'key.pem')), cert: await readFile(path.join(dir, 'cert.pem')) }, (req, res) => {
    if (req.url === '/agent/manifest.txt') res.end(`version 9.9.9\nx64 p-x64.tar.gz ${'0'.repeat(64)} ${payload.length}\narm64 p-arm64.tar.gz ${'0'.repeat(64)} ${payload.length}\n`)
    else res.end(payload)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.close() })
  const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`
  const env = { CLOUDPILOT_OS_RELEASE: await osRelease(dir, 'debian', '12', 'Debian GNU/Linux 12 (bookworm)') }

  const unpinned = await pipeToBash(script, ['--token', 'cpe_x', '--coordinator', url], env)
  t.equal(unpinned.code, 1)
  t.match(unpinned.stderr, /cannot fetch .*manifest\.txt/, 'a self-signed coordinator is not trusted without a pin')

  const wrong = await pipeToBash(script, ['--token', 'cpe_x', '--coordinator', url, '--ca-fingerprint', 'AB:'.repeat(31) + 'AB'], env)
  t.equal(wrong.code, 1)
  t.match(wrong.stderr, /presents a certificate with SHA-256 fingerprint [0-9a-f]{64}, not the pinned (ab){32}: refusing to continue/)

  // The right pin gets past TLS to the download, whose bad sha256 then stops it (before anything is installed).
  const before = await snapshot()
  const pinned = await pipeToBash(script, ['--token', 'cpe_x', '--coordinator', url, '--ca-fingerprint', fp.toLowerCase()], { ...env, PATH: await standIns(dir) })
  t.equal(pinned.code, 1)
  t.match(pinned.stdout, /pinned the coordinator certificate/)
  t.match(pinned.stderr, /sha256 of p-(x64|arm64)\.tar\.gz is [0-9a-f]{64}, the coordinator published 0{64}: refusing to install it/)
  await t.rejects(access(path.join(dir, 'changed')), 'nothing was created')
  t.same(await snapshot(), before)
})

/** Stand-ins for the first tools that change the system: if a check were broken, they stop the script there. */
async function standIns (dir: string): Promise<string> {
  const bin = path.join(dir, 'bin')
  await runCommand('mkdir', ['-p', bin])
  for (const tool of ['useradd', 'groupadd', 'install']) {
    await writeFile(path.join(bin, tool), `#!/bin/sh\necho "$0 $*" >> ${path.join(dir, 'changed')}\nexit 1\n`)
    await chmod(path.join(bin, tool), 0o755)
  }
  return `${bin}:${BASE_ENV.PATH}`
}

async function snapshot (): Promise<Record<string, boolean | string>> {
  const exists = async (p: string): Promise<boolean> => { try { await access(p); return true } catch { return false } }
  const user = await runCommand('getent', ['passwd', 'cloudpilot'])
  const group = await runCommand('getent', ['group', 'cloudpilot'])
  return {
    user: user.stdout,
    group: group.stdout,
    opt: await exists('/opt/cloudpilot'),
    etc: await exists('/etc/cloudpilot'),
    state: await exists('/var/lib/cloudpilot'),
    spool: await exists('/tmp/cloudpilot-backups'),
    unit: await exists('/etc/systemd/system/cloudpilot-agent.service'),
  }
}
