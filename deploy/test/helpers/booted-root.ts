import { spawn } from 'node:child_process'
import { access, open, readFile } from 'node:fs/promises'
import path from 'node:path'
import type { Test } from 'tap'
import { waitFor } from '../../../coordinator/test/helpers/wait-for.ts'
import { BASE_INCLUDE, freshRoot, prerequisites, runCommand } from './fresh-root.ts'

/**
 * A fresh Debian 12 root (debootstrap minbase + systemd, dbus and the installer's needs) booted with systemd as its
 * PID 1 by `systemd-nspawn --boot`, sharing the host's network (so the coordinator on 127.0.0.1 is reachable).
 * Commands run inside with nsenter (the container's mount, PID, UTS and IPC namespaces), as a root shell on a server
 * would: /proc/1/comm is systemd and systemctl talks to it. The container is not registered with machined (this
 * host runs no systemd), so it is addressed by the PID of its init.
 */
export const SYSTEMD_INCLUDE = ['systemd', 'systemd-sysv', 'dbus', ...BASE_INCLUDE]

export interface BootedRoot {
  dir: string
  source: 'debootstrap' | 'cache'
  /** ms to make the root (cache unpack or debootstrap) and to boot it to `systemctl is-system-running` = running. */
  rootMs: number
  bootMs: number
  /** `systemctl is-system-running` once booted: running, or degraded when a unit of the image itself failed. */
  bootState: 'running' | 'degraded'
  /** The container's init (systemd) as a host PID. */
  initPid: number
  exec (script: string, options?: { timeoutMs?: number }): Promise<{ code: number | null, stdout: string, stderr: string }>
  /** The container's console output so far (boot messages), for failure messages. */
  console (): Promise<string>
}

export async function bootPrerequisites (): Promise<string | null> {
  const missing = await prerequisites()
  if (missing !== null) return missing
  for (const tool of ['/usr/bin/systemd-nspawn', '/usr/bin/nsenter', '/usr/bin/setpriv']) {
    try { await access(tool) } catch { return `${tool} is missing (apt-get install -y systemd-container util-linux)` }
  }
  return null
}

export async function bootedRoot (t: Test, log: (line: string) => void = () => {}): Promise<BootedRoot> {
  const root = await freshRoot(t, log, { include: SYSTEMD_INCLUDE, mountProcDev: false })
  const consoleFile = path.join(path.dirname(root.dir), 'console.log')
  const out = await open(consoleFile, 'w')
  const started = Date.now()
  // --register=no --keep-unit: no machined or systemd on the host to register with or to create a scope in.
  // No --private-network: the host's loopback is the container's. setpriv --pdeathsig: should this test process be
  // killed (a runner timeout), nspawn gets SIGTERM and powers the container off instead of leaving it running.
  const nspawn = spawn('/usr/bin/setpriv', [
    '--pdeathsig', 'TERM', '--', '/usr/bin/systemd-nspawn', '--quiet', '--boot', '--directory', root.dir, '--machine', `cp-test-${process.pid}`,
    '--register=no', '--keep-unit', '--console=read-only',
  ], { stdio: ['ignore', out.fd, out.fd], env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8' } })
  const exited = new Promise<number | null>((resolve) => nspawn.once('exit', (code) => resolve(code)))
  void out.close()

  // Runs before freshRoot's teardown (tap runs teardowns last-registered first): power the container off, then the
  // root directory is removed. SIGTERM makes nspawn ask the container's systemd to power off.
  t.teardown(async () => {
    if (nspawn.exitCode !== null || nspawn.signalCode !== null) return
    nspawn.kill('SIGTERM')
    const timer = setTimeout(() => nspawn.kill('SIGKILL'), 20_000)
    await exited
    clearTimeout(timer)
  })

  const readConsole = async (): Promise<string> => await readFile(consoleFile, 'utf8').catch(() => '')
  const initPid = await waitFor('the container init', async () => {
    if (nspawn.exitCode !== null) throw new Error(`systemd-nspawn exited with ${nspawn.exitCode}: ${await readConsole()}`)
    // nspawn's first child only sets up and forks the container's init: wait for the child that is PID 1 inside.
    const r = await runCommand('pgrep', ['-P', String(nspawn.pid)])
    for (const pid of r.stdout.trim().split('\n').map(Number).filter((p) => p > 0)) {
      const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '')
      if (/^NSpid:\s+\d+\s+1$/m.test(status)) return pid
    }
    return undefined
  }, 20_000, 50)

  const exec: BootedRoot['exec'] = async (script, options = {}) => await runCommand('/usr/bin/nsenter', [
    '--target', String(initPid), '--mount', '--pid', '--uts', '--ipc', '--root', '--wd', '/bin/bash', '-c', script,
  ], {
    env: { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/root', LANG: 'C.UTF-8', TERM: 'dumb' },
    timeoutMs: options.timeoutMs ?? 120_000,
  })

  const state = await waitFor('systemd in the container to finish booting', async () => {
    if (nspawn.exitCode !== null) throw new Error(`systemd-nspawn exited with ${nspawn.exitCode}: ${await readConsole()}`)
    const r = await exec('systemctl is-system-running', { timeoutMs: 10_000 })
    const s = r.stdout.trim()
    return s === 'running' || s === 'degraded' ? s as 'running' | 'degraded' : undefined
  }, 60_000, 100).catch(async (err: Error) => { throw new Error(`${err.message}\n${await readConsole()}`) })
  if (state === 'degraded') {
    const failed = await exec('systemctl --failed --no-legend --plain')
    log(`container booted degraded: ${failed.stdout.trim()}`)
  }
  return { dir: root.dir, source: root.source, rootMs: root.ms, bootMs: Date.now() - started, bootState: state, initPid, exec, console: readConsole }
}
