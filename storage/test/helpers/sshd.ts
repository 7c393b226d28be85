/**
 * A real OpenSSH server (Debian's `openssh-server`, /usr/sbin/sshd) on a free loopback port, with its own temp
 * config, host key and authorized_keys, serving SFTP (internal-sftp, no shell) to one dedicated test user:
 *
 *   const sshd = await startSshd()          // a string when it cannot run here (see `sshdUnavailable`)
 *   t.teardown(() => sshd.close())
 *   // destination: { type: 'sftp', config: { host: sshd.host, port: sshd.port, username: sshd.username,
 *   //   path: sshd.root, hostKeyFingerprint: sshd.hostKeyFingerprint }, credentials: { privateKey: sshd.privateKey } }
 *
 * The user `cpsftp` is created when missing (needs root, like sshd itself). Its password is random per machine,
 * kept in a root-only file, so parallel test files agree on it and it is never a well-known one. Password
 * authentication is allowed by this sshd only (`UsePAM no`, so sshd checks /etc/shadow itself); the user's shell
 * is nologin and ForceCommand is internal-sftp.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chmod, chown, link, mkdir, mkdtemp, readFile, rm, stat, unlink, writeFile } from 'node:fs/promises'
import net, { type AddressInfo } from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'

const run = promisify(execFile)

export const SSHD = '/usr/sbin/sshd'
export const SFTP_USER = 'cpsftp'
const PASSWORD_FILE = '/root/.cloudpilot-test-sftp-password'

export interface SshdHandle {
  host: string
  port: number
  username: string
  password: string
  /** OpenSSH private key (ed25519) whose public key is authorized. */
  privateKey: string
  /** An authorized ed25519 key encrypted with `passphrase`. */
  encryptedKey: string
  passphrase: string
  /** A valid key that is NOT authorized. */
  strangerKey: string
  /** `SHA256:...` of the server's host key, as `ssh-keygen -lf` prints it. */
  hostKeyFingerprint: string
  /** The legacy `MD5:aa:bb:...` form of the same key. */
  hostKeyMd5: string
  /** A fresh directory owned by the test user (the destination path). */
  root: string
  uid: number
  gid: number
  /** sshd's own log (stderr), for diagnosing a failure. */
  log: () => string
  close: () => Promise<void>
}

/** Why sshd cannot run here, or undefined when it can. */
export async function sshdUnavailable (): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'the sftp tests start sshd and create a test user: they need root'
  try {
    await stat(SSHD)
  } catch {
    return `${SSHD} is missing (apt-get install openssh-server)`
  }
  try {
    await run('ssh-keygen', ['-V']).catch(async () => await run('which', ['ssh-keygen']))
  } catch {
    return 'ssh-keygen is missing (apt-get install openssh-client)'
  }
  return undefined
}

async function retrying<T> (what: () => Promise<T>, attempts = 20): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await what()
    } catch (err) {
      if (i >= attempts) throw err
      await new Promise((resolve) => setTimeout(resolve, 50 + Math.random() * 100))
    }
  }
}

/** The machine's test password: made once, atomically (parallel test files race for it). */
async function testPassword (): Promise<{ password: string, fresh: boolean }> {
  try {
    return { password: (await readFile(PASSWORD_FILE, 'utf8')).trim(), fresh: false }
  } catch { /* make it */ }
  const password = randomBytes(18).toString('base64url')
  const tmp = `${PASSWORD_FILE}.${process.pid}.${randomBytes(4).toString('hex')}`
  await writeFile(tmp, password + '\n', { mode: 0o600 })
  try {
    await link(tmp, PASSWORD_FILE)
    return { password, fresh: true }
  } catch {
    return { password: (await readFile(PASSWORD_FILE, 'utf8')).trim(), fresh: false }
  } finally {
    await unlink(tmp).catch(() => {})
  }
}

async function ensureUser (): Promise<{ uid: number, gid: number, password: string }> {
  const exists = async (): Promise<boolean> => await run('id', ['-u', SFTP_USER]).then(() => true, () => false)
  let created = false
  if (!(await exists())) {
    // Exit status 9: made meanwhile by a parallel test file.
    await retrying(async () => {
      try {
        await run('useradd', ['--create-home', '--shell', '/usr/sbin/nologin', '--comment', 'CloudPilot sftp tests', SFTP_USER])
        created = true
      } catch (err) {
        if ((err as { code?: unknown }).code !== 9 && !(await exists())) throw err
      }
    })
  }
  const { password, fresh } = await testPassword()
  // Set the password when this process made it or the user (chpasswd takes a lock that parallel runs may hold).
  if (fresh || created) {
    await retrying(async () => {
      const child = spawn('chpasswd', [], { stdio: ['pipe', 'ignore', 'pipe'] })
      let stderr = ''
      child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
      child.stdin.end(`${SFTP_USER}:${password}\n`)
      const code = await new Promise<number | null>((resolve) => child.on('close', resolve))
      if (code !== 0) throw new Error(`chpasswd failed: ${stderr}`)
    })
  }
  const uid = Number((await run('id', ['-u', SFTP_USER])).stdout.trim())
  const gid = Number((await run('id', ['-g', SFTP_USER])).stdout.trim())
  return { uid, gid, password }
}

export async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo
      server.close(() => resolve(port))
    })
  })
}

/** Resolves once something on the port speaks SSH (its identification line). */
async function waitForBanner (port: number, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`sshd exited (${child.exitCode ?? child.signalCode})`)
    const banner = await new Promise<string>((resolve) => {
      const socket = net.connect(port, '127.0.0.1')
      let data = ''
      socket.setTimeout(500, () => { socket.destroy(); resolve(data) })
      socket.on('data', (d: Buffer) => { data += d.toString(); if (data.includes('\n')) { socket.destroy(); resolve(data) } })
      socket.on('error', () => resolve(''))
    })
    if (banner.startsWith('SSH-2.0-')) return
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  throw new Error(`sshd did not answer on port ${port} within ${timeoutMs} ms`)
}

async function keygen (file: string, passphrase = ''): Promise<string> {
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', passphrase, '-C', 'cloudpilot-test', '-f', file])
  return await readFile(file, 'utf8')
}

export async function startSshd (): Promise<SshdHandle> {
  const why = await sshdUnavailable()
  if (why !== undefined) throw new Error(why)
  const { uid, gid, password } = await ensureUser()
  const dir = await mkdtemp(path.join(os.tmpdir(), 'cloudpilot-sshd-'))
  // sshd reads authorized_keys as the user: the directory must be searchable (the private keys in it stay 0600).
  await chmod(dir, 0o755)
  const root = await mkdtemp(path.join(os.tmpdir(), 'cloudpilot-sftp-root-'))
  await chown(root, uid, gid)
  // privilege separation directory of Debian's sshd
  await mkdir('/run/sshd', { recursive: true, mode: 0o755 })

  const [privateKey, encryptedKey, strangerKey] = await Promise.all([
    keygen(path.join(dir, 'id_client')),
    keygen(path.join(dir, 'id_encrypted'), 'correct horse battery staple'),
    keygen(path.join(dir, 'id_stranger')),
  ])
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', path.join(dir, 'host_key')])
  const authorized = (await readFile(path.join(dir, 'id_client.pub'), 'utf8')) + (await readFile(path.join(dir, 'id_encrypted.pub'), 'utf8'))
  await writeFile(path.join(dir, 'authorized_keys'), authorized, { mode: 0o644 })
  const printed = (await run('ssh-keygen', ['-l', '-E', 'sha256', '-f', path.join(dir, 'host_key.pub')])).stdout
  const hostKeyFingerprint = /(SHA256:[A-Za-z0-9+/]+)/.exec(printed)?.[1]
  if (hostKeyFingerprint === undefined) throw new Error(`cannot read the host key fingerprint from: ${printed}`)
  const printedMd5 = (await run('ssh-keygen', ['-l', '-E', 'md5', '-f', path.join(dir, 'host_key.pub')])).stdout
  const hostKeyMd5 = /(MD5:[0-9a-f:]+)/.exec(printedMd5)?.[1]
  if (hostKeyMd5 === undefined) throw new Error(`cannot read the host key MD5 fingerprint from: ${printedMd5}`)

  let lastError: unknown
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort()
    const config = [
      'ListenAddress 127.0.0.1',
      `Port ${port}`,
      `HostKey ${path.join(dir, 'host_key')}`,
      `PidFile ${path.join(dir, 'sshd.pid')}`,
      `AuthorizedKeysFile ${path.join(dir, 'authorized_keys')}`,
      `AllowUsers ${SFTP_USER}`,
      'PermitRootLogin no',
      'PubkeyAuthentication yes',
      'PasswordAuthentication yes',
      'KbdInteractiveAuthentication no',
      'PermitEmptyPasswords no',
      'UsePAM no',
      // The key files live under /tmp (world-writable): sshd's ownership checks would refuse them.
      'StrictModes no',
      'Subsystem sftp internal-sftp',
      'ForceCommand internal-sftp',
      'AllowTcpForwarding no',
      'X11Forwarding no',
      'PrintMotd no',
      'MaxStartups 100:30:200',
      'MaxSessions 50',
      'LoginGraceTime 30',
      'LogLevel VERBOSE',
      '',
    ].join('\n')
    const configFile = path.join(dir, 'sshd_config')
    await writeFile(configFile, config, { mode: 0o600 })
    const child = spawn(SSHD, ['-D', '-e', '-f', configFile], { stdio: ['ignore', 'ignore', 'pipe'], detached: true })
    let log = ''
    child.stderr?.on('data', (d: Buffer) => { log = (log + d.toString()).slice(-200_000) })
    try {
      await waitForBanner(port, child, 5000)
    } catch (err) {
      lastError = new Error(`${(err as Error).message}\n${log}`)
      if (child.pid !== undefined && child.exitCode === null) process.kill(child.pid, 'SIGTERM')
      continue
    }
    let closed = false
    return {
      host: '127.0.0.1',
      port,
      username: SFTP_USER,
      password,
      privateKey,
      encryptedKey,
      passphrase: 'correct horse battery staple',
      strangerKey,
      hostKeyFingerprint,
      hostKeyMd5,
      root,
      uid,
      gid,
      log: () => log,
      close: async () => {
        if (closed) return
        closed = true
        const exited = new Promise((resolve) => { if (child.exitCode !== null || child.signalCode !== null) resolve(undefined); else child.once('exit', resolve) })
        // sshd and the per-connection children it forked share its process group.
        if (child.pid !== undefined) {
          try { process.kill(-child.pid, 'SIGTERM') } catch { /* already gone */ }
        }
        await exited
        await rm(dir, { recursive: true, force: true })
        await rm(root, { recursive: true, force: true })
      },
    }
  }
  await rm(dir, { recursive: true, force: true })
  await rm(root, { recursive: true, force: true })
  throw lastError instanceof Error ? lastError : new Error('sshd did not start')
}
