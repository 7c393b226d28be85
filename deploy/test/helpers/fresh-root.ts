import { spawn } from 'node:child_process'
import { access, mkdir, readdir, readFile, readlink, rename, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import type { Test } from 'tap'

/**
 * A minimal Debian 12 root made with debootstrap (`--variant=minbase` + curl, ca-certificates, acl, and whatever else
 * the caller includes, e.g. systemd to boot it), used to run the one-line installer as on a fresh server without
 * Node.js. The finished root is cached as a tarball under /var/cache/cloudpilot-test (CLOUDPILOT_TEST_CACHE) keyed by
 * its package list, so later runs unpack it in seconds; CLOUDPILOT_TEST_ROOT_CACHE=0 forces a cold debootstrap.
 */
export const BASE_INCLUDE = ['curl', 'ca-certificates', 'acl']
const rootKey = (include: readonly string[]): string => `debian12-minbase-${include.join('-')}-v1`

export interface FreshRoot {
  dir: string
  /** How the root was made: 'debootstrap' (cold) or 'cache'. */
  source: 'debootstrap' | 'cache'
  ms: number
  /** Runs a command inside the root (chroot, same network namespace: the coordinator on loopback is reachable). */
  exec (script: string, options?: { timeoutMs?: number }): Promise<{ code: number | null, stdout: string, stderr: string }>
  /** Processes whose root directory is this root. */
  processes (): Promise<number[]>
}

export async function prerequisites (): Promise<string | null> {
  if (process.getuid?.() !== 0) return 'needs root (chroot, mounts)'
  for (const tool of ['/usr/sbin/debootstrap', '/usr/sbin/chroot']) {
    try { await access(tool) } catch { return `${tool} is missing (apt-get install -y debootstrap)` }
  }
  return null
}

/** The Debian mirror this machine's apt uses (the one that is reachable here). */
export async function debianMirror (): Promise<string> {
  for (const file of ['/etc/apt/sources.list.d/debian.sources', '/etc/apt/sources.list']) {
    const text = await readFile(file, 'utf8').catch(() => '')
    const deb822 = /^URIs:\s*(\S+)/m.exec(text)
    const oneLine = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+bookworm\s/m.exec(text)
    const uri = deb822?.[1] ?? oneLine?.[1]
    if (uri !== undefined && !uri.includes('security')) return uri
  }
  return 'http://deb.debian.org/debian'
}

export interface FreshRootOptions {
  /** Packages debootstrap adds to minbase (default BASE_INCLUDE); each list is cached on its own. */
  include?: readonly string[]
  /** Mount /proc and /dev into the root for chroot (default); false for a root that is booted with its own. */
  mountProcDev?: boolean
}

export async function freshRoot (t: Test, log: (line: string) => void = () => {}, options: FreshRootOptions = {}): Promise<FreshRoot> {
  const include = options.include ?? BASE_INCLUDE
  const started = Date.now()
  const base = await mkdtempRoot()
  const dir = path.join(base, 'root')
  const cacheDir = process.env.CLOUDPILOT_TEST_CACHE ?? '/var/cache/cloudpilot-test'
  const cacheFile = path.join(cacheDir, `${rootKey(include)}.tar`)
  const useCache = process.env.CLOUDPILOT_TEST_ROOT_CACHE !== '0'
  const mounts: string[] = []

  const root: FreshRoot = {
    dir,
    source: 'cache',
    ms: 0,
    async exec (script, options = {}) {
      return await runCommand('chroot', [dir, '/bin/bash', '-c', script], {
        env: { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/root', LANG: 'C.UTF-8', TERM: 'dumb' },
        timeoutMs: options.timeoutMs ?? 120_000,
      })
    },
    async processes () {
      const pids: number[] = []
      for (const entry of await readdir('/proc')) {
        if (!/^\d+$/.test(entry)) continue
        const target = await readlink(`/proc/${entry}/root`).catch(() => null)
        if (target === dir) pids.push(Number(entry))
      }
      return pids
    },
  }

  // Registered before anything is mounted: stop what runs inside, unmount, remove.
  t.teardown(async () => {
    for (const pid of await root.processes()) { try { process.kill(pid, 'SIGKILL') } catch {} }
    for (const m of mounts.reverse()) await runCommand('umount', ['-l', m]).catch(() => {})
    const stillMounted = (await readFile('/proc/mounts', 'utf8')).split('\n').some((l) => l.split(' ')[1]?.startsWith(dir + '/'))
    if (stillMounted) throw new Error(`mounts left under ${dir}: not removing it`)
    await rm(base, { recursive: true, force: true })
  })

  if (useCache && await exists(cacheFile)) {
    await mkdir(dir)
    const r = await runCommand('tar', ['-xpf', cacheFile, '-C', dir, '--numeric-owner'])
    if (r.code !== 0) throw new Error(`unpacking ${cacheFile}: ${r.stderr}`)
    root.source = 'cache'
  } else {
    const mirror = await debianMirror()
    log(`debootstrap bookworm from ${mirror} (cold)`)
    const r = await runCommand('debootstrap', ['--variant=minbase', `--include=${include.join(',')}`, 'bookworm', dir, mirror], { timeoutMs: 15 * 60_000 })
    if (r.code !== 0) throw new Error(`debootstrap failed (${r.code}): ${r.stdout.slice(-2000)}${r.stderr.slice(-2000)}`)
    root.source = 'debootstrap'
    await rm(path.join(dir, 'var/cache/apt/archives'), { recursive: true, force: true })
    await mkdir(path.join(dir, 'var/cache/apt/archives/partial'), { recursive: true })
    if (useCache) {
      await mkdir(cacheDir, { recursive: true })
      const tmp = `${cacheFile}.tmp-${process.pid}`
      const c = await runCommand('tar', ['-cpf', tmp, '-C', dir, '--numeric-owner', '.'])
      if (c.code === 0) await rename(tmp, cacheFile)
      else await rm(tmp, { force: true })
    }
  }
  for (const [what, opts] of options.mountProcDev === false ? [] : [['proc', ['-t', 'proc', 'proc']], ['dev', ['--bind', '/dev']]] as const) {
    const target = path.join(dir, what)
    const r = await runCommand('mount', [...opts, target])
    if (r.code !== 0) throw new Error(`mount ${what}: ${r.stderr}`)
    mounts.push(target)
  }
  root.ms = Date.now() - started
  return root
}

async function mkdtempRoot (): Promise<string> {
  const { mkdtemp } = await import('node:fs/promises')
  // Not under /tmp of the host's tmp cleaners' reach only; any local disk path works.
  return await mkdtemp(path.join(os.tmpdir(), 'cp-fresh-root-'))
}

async function exists (file: string): Promise<boolean> {
  try { await access(file); return true } catch { return false }
}

export async function runCommand (cmd: string, args: string[], options: { env?: NodeJS.ProcessEnv, timeoutMs?: number, input?: string } = {}): Promise<{ code: number | null, stdout: string, stderr: string }> {
  // With an explicit environment, `env -i` makes sure nothing else gets through: the test runner adds NODE_OPTIONS
  // to every child it sees spawned, which must not reach the root's processes.
  const p = options.env === undefined
    ? spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] })
    : spawn('/usr/bin/env', ['-i', ...Object.entries(options.env).map(([k, v]) => `${k}=${v ?? ''}`), cmd, ...args], { stdio: ['pipe', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  p.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
  p.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  // A script piped to bash may end before bash read all of it (as with curl | bash): not an error.
  p.stdin.on('error', () => {})
  p.stdin.end(options.input ?? '')
  const timer = setTimeout(() => p.kill('SIGKILL'), options.timeoutMs ?? 120_000)
  const code = await new Promise<number | null>((resolve) => p.once('close', resolve))
  clearTimeout(timer)
  return { code, stdout, stderr }
}

/** Times named steps of a long test and prints them as one comment at its end. */
export function stepTimer (t: Test): <T>(name: string, fn: () => Promise<T>) => Promise<T> {
  const timings: Record<string, number> = {}
  t.teardown(() => { t.comment(`timings (ms): ${JSON.stringify(timings)}`) })
  return async (name, fn) => {
    const started = Date.now()
    try { return await fn() } finally { timings[name] = Date.now() - started }
  }
}
