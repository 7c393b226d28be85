import { randomBytes } from 'node:crypto'
import net from 'node:net'
import path from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { promisify } from 'node:util'
import SftpClient from 'ssh2-sftp-client'
import type { Client as SshClient, FileEntryWithStats, SFTPWrapper, Stats } from 'ssh2'
import { CloudPilotError, type SftpConfig, type SftpCredentials } from '@cloudpilot/protocol'
import type { CallOptions, GetOptions, ListOptions, ListPage, ObjectInfo, OpenOptions, PutOptions, PutResult, StorageDriver, TestResult } from './driver.ts'
import { checkRange } from './byte-range.ts'
import { downloadStream } from './download-stream.ts'
import { checkEndpointHost, guardedLookup } from './endpoint-guard.ts'
import { checkKey } from './key-path.ts'
import { abortable, aborted } from './abortable.ts'
import { abortError, throwIfAborted } from './node-error-map.ts'
import { probeRoundTrip } from './probe.ts'
import { DEFAULT_RETRY, withRetries, type RetryPolicy } from './retry.ts'
import { redact } from './redact.ts'
import { FINGERPRINT_HOWTO, parseFingerprint, sha256Fingerprint, type PinnedFingerprint } from './sftp-host-key.ts'
import { isConnectionLoss, mapSftpError, sftpStatusOf, type SftpOperation } from './sftp-error-map.ts'
import { channelOpen, connectionLost, failFastClose, SftpWriteStream } from './sftp-write-stream.ts'
import { sourceError, uploadSource } from './upload-source.ts'

/** Knobs with production defaults; tests may change them. */
export interface SftpTuning {
  /** Time for TCP connect + SSH handshake + authentication. */
  readyTimeoutMs: number
  /** SSH keepalives on an idle connection (0: off). */
  keepaliveIntervalMs: number
  /** Connection attempts and idempotent requests after a lost connection. */
  retry: RetryPolicy
  /** WRITE requests in flight per put. */
  writeConcurrency: number
  /** Time allowed to remove the part file of a failed put. */
  cleanupTimeoutMs: number
}

export const DEFAULT_SFTP_TUNING: SftpTuning = {
  readyTimeoutMs: 15_000,
  keepaliveIntervalMs: 15_000,
  retry: DEFAULT_RETRY,
  writeConcurrency: 4,
  cleanupTimeoutMs: 15_000,
}

const PART_SUFFIX = /\.part-[0-9a-f]{12}$/
const S_IFMT = 0o170000
const S_IFREG = 0o100000
const S_IFDIR = 0o040000
const HOST_KEY_HINT = `Verify the server's host key out of band and set hostKeyFingerprint to it. ${FINGERPRINT_HOWTO}`

interface Session {
  client: SftpClient
  ssh: SshClient
  sftp: SFTPWrapper
  /** Absolute destination directory on the server. */
  base: string
  extensions: Set<string>
  /** Directories known to exist (relative to base). */
  madeDirs: Set<string>
  closed: boolean
}

interface SftpOps {
  stat: (p: string) => Promise<Stats>
  lstat: (p: string) => Promise<Stats>
  realpath: (p: string) => Promise<string>
  readdir: (p: string) => Promise<FileEntryWithStats[]>
  mkdir: (p: string, attrs: { mode: number }) => Promise<void>
  unlink: (p: string) => Promise<void>
  rename: (from: string, to: string) => Promise<void>
  posixRename: (from: string, to: string) => Promise<void>
}

/** The SFTP requests used here, as promises that fail at once when the connection is gone. */
function ops (sftp: SFTPWrapper): SftpOps {
  const guard = <A extends unknown[], R>(fn: (...args: A) => Promise<R>) => async (...args: A): Promise<R> => {
    if (!channelOpen(sftp)) throw connectionLost()
    return await fn(...args)
  }
  return {
    stat: guard(promisify(sftp.stat.bind(sftp))),
    lstat: guard(promisify(sftp.lstat.bind(sftp))),
    realpath: guard(promisify(sftp.realpath.bind(sftp))),
    readdir: guard(promisify(sftp.readdir.bind(sftp)) as (p: string) => Promise<FileEntryWithStats[]>),
    mkdir: guard(promisify(sftp.mkdir.bind(sftp)) as (p: string, attrs: { mode: number }) => Promise<void>),
    unlink: guard(promisify(sftp.unlink.bind(sftp))),
    rename: guard(promisify(sftp.rename.bind(sftp))),
    posixRename: guard(promisify(sftp.ext_openssh_rename.bind(sftp))),
  }
}

function isFile (mode: number): boolean { return (mode & S_IFMT) === S_IFREG }
function isDir (mode: number): boolean { return (mode & S_IFMT) === S_IFDIR }

/**
 * `sftp`: a directory on an SSH server (ssh2-sftp-client over ssh2, pure JavaScript).
 *
 * - Authentication: password (also answered to keyboard-interactive prompts) or private key (+ passphrase).
 * - The server's host key is verified before any credential is sent: `hostKeyFingerprint` pins it
 *   (`SHA256:...` as `ssh-keygen -lf` prints it); `trustOnFirstUse: true` is the explicit opt-in to accept an
 *   unknown key, which is then reported (onWarning, `hostKeyFingerprint` of `test()`) so the caller can pin it, and
 *   pinned for the rest of this driver's life. With neither, connecting fails and the message gives the
 *   fingerprint seen and how to pin it. A key that does not match the pinned one is refused as AUTH_FAILED (the
 *   server failed to authenticate; SFTP has no TLS, so TLS_ERROR never comes from this driver).
 * - One SSH connection per driver, shared by concurrent calls, Nagle off (a 50 MB put takes ~30 s with it on),
 *   reconnected after a loss; connecting and idempotent requests are retried with backoff, authentication never.
 * - put writes `<key>.part-<random>` (0600, several writes in flight, fsync@openssh.com when offered, handle
 *   closed) and renames it into place with posix-rename@openssh.com (atomic replace); servers without that
 *   extension get a plain rename, after removing an existing object (never a partial object, but a short moment
 *   without one). The part file is removed when the put fails or is aborted. Directories of keys are created
 *   (mkdir -p) under `path`, which must exist (CONTAINER_NOT_FOUND otherwise).
 * - Keys map to paths under `path`; list walks the directories under the prefix and sorts (SFTP has no prefix
 *   listing); the cursor is the last key of the page. Empty directories are left in place after deletes.
 */
export class SftpDriver implements StorageDriver {
  readonly type = 'sftp' as const
  private readonly host: string
  private readonly port: number
  private readonly username: string
  private readonly basePath: string
  private readonly where: string
  private readonly password: string | undefined
  private readonly privateKey: string | undefined
  private readonly passphrase: string | undefined
  private readonly secrets: readonly string[]
  private readonly trustOnFirstUse: boolean
  private readonly rateLimit: number | undefined
  private readonly tuning: SftpTuning
  private readonly allowPrivate: boolean
  private readonly onWarning: OpenOptions['onWarning']
  private pinned: PinnedFingerprint | undefined
  private seenFingerprint: string | undefined
  private session: Promise<Session> | undefined
  private readonly connecting = new Set<net.Socket>()
  private closing = false

  constructor (config: SftpConfig, credentials: SftpCredentials, options: OpenOptions = {}, tuning: Partial<SftpTuning> = {}) {
    const host = typeof config.host === 'string' ? config.host.trim() : ''
    if (host === '' || /[\s/@]/.test(host)) throw new CloudPilotError('VALIDATION_FAILED', 'sftp destination needs a host name or address (without user@ or a path)')
    const port = config.port ?? 22
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new CloudPilotError('VALIDATION_FAILED', 'sftp port must be 1..65535')
    const username = typeof config.username === 'string' ? config.username.trim() : ''
    if (username === '') throw new CloudPilotError('VALIDATION_FAILED', 'sftp destination needs a username')
    const dir = typeof config.path === 'string' ? config.path.trim() : ''
    if (dir === '' || dir.includes('\0') || dir.split('/').includes('..')) throw new CloudPilotError('VALIDATION_FAILED', 'sftp path must be a directory path without ".." segments')
    // Passwords may legitimately contain spaces; only a trailing newline from a paste is dropped.
    const password = typeof credentials.password === 'string' && credentials.password !== '' ? credentials.password.replace(/[\r\n]+$/, '') : undefined
    const privateKey = typeof credentials.privateKey === 'string' && credentials.privateKey.trim() !== '' ? credentials.privateKey.trim() + '\n' : undefined
    const passphrase = typeof credentials.passphrase === 'string' && credentials.passphrase !== '' ? credentials.passphrase.replace(/[\r\n]+$/, '') : undefined
    if (password === undefined && privateKey === undefined) throw new CloudPilotError('VALIDATION_FAILED', 'sftp destination needs a password or a private key')

    this.allowPrivate = options.allowPrivateEndpoints === true
    checkEndpointHost(host, this.allowPrivate)
    this.host = host.replace(/^\[|\]$/g, '')
    this.port = port
    this.username = username
    this.basePath = dir.length > 1 ? dir.replace(/\/+$/, '') : dir
    this.where = `${username}@${host}:${port}`
    this.password = password
    this.privateKey = privateKey
    this.passphrase = passphrase
    this.secrets = [password, passphrase].filter((s): s is string => s !== undefined)
    this.trustOnFirstUse = config.trustOnFirstUse === true
    this.pinned = typeof config.hostKeyFingerprint === 'string' && config.hostKeyFingerprint.trim() !== '' ? parseFingerprint(config.hostKeyFingerprint) : undefined
    this.rateLimit = config.rateLimitBytesPerSecond
    this.tuning = { ...DEFAULT_SFTP_TUNING, ...tuning }
    this.onWarning = options.onWarning
  }

  /** The fingerprint of the host key the server presented on the last connection (`SHA256:...`). */
  get hostKeyFingerprint (): string | undefined {
    return this.seenFingerprint
  }

  private fail (err: unknown, op: SftpOperation, remotePath?: string): Error {
    return mapSftpError(err, remotePath === undefined ? { op, where: this.where, secrets: this.secrets } : { op, where: this.where, path: remotePath, secrets: this.secrets })
  }

  private warn (message: string, details: Record<string, unknown>): void {
    try { this.onWarning?.(redact(message, this.secrets), details) } catch { /* a broken logger must not fail a call */ }
  }

  // --- connection ---------------------------------------------------------------------------------------------

  private async connectOnce (): Promise<Session> {
    // Our own socket: the SSRF guard checks the address on connect, and Nagle is off from the first packet (with
    // it on, every round trip of the handshake waits for a delayed ACK: ~0.4 s per connection even on loopback).
    const socket = net.connect({ host: this.host, port: this.port, noDelay: true, lookup: guardedLookup(this.allowPrivate) })
    this.connecting.add(socket)
    // ssh2-sftp-client reports errors outside a call through these callbacks (it logs to the console otherwise).
    const client = new SftpClient('cloudpilot', { error: () => {}, end: () => {}, close: () => {} })
    let firstError: unknown
    let hostKeyRefusal: CloudPilotError | undefined
    const onError = (err: unknown): void => { firstError ??= err }
    client.on('error', onError)
    if (this.password !== undefined) {
      const password = this.password
      client.on('keyboard-interactive', (_name: string, _instructions: string, _lang: string, prompts: unknown[], finish: (answers: string[]) => void) => {
        finish(prompts.map(() => password))
      })
    }
    const hostVerifier = (key: Buffer): boolean => {
      const seen = sha256Fingerprint(key)
      this.seenFingerprint = seen
      if (this.pinned !== undefined) {
        if (this.pinned.matches(key)) return true
        hostKeyRefusal = new CloudPilotError('AUTH_FAILED', `sftp ${this.where}: the server's host key (${seen}) does not match the pinned hostKeyFingerprint (${this.pinned.text}); refusing to connect (the server was reinstalled, or someone is intercepting the connection)`, { hint: HOST_KEY_HINT })
        return false
      }
      if (this.trustOnFirstUse) {
        this.pinned = parseFingerprint(seen)
        this.warn(`sftp ${this.where}: accepted the server's host key ${seen} on first use (trustOnFirstUse); pin it as hostKeyFingerprint`, { host: this.host, port: this.port, hostKeyFingerprint: seen })
        return true
      }
      hostKeyRefusal = new CloudPilotError('AUTH_FAILED', `sftp ${this.where}: the server's host key is not pinned; it presented ${seen}. Set hostKeyFingerprint to "${seen}" once you have checked that this is the server's key, or set trustOnFirstUse: true to accept the key seen on first use`, { hint: HOST_KEY_HINT })
      return false
    }
    let sftp: SFTPWrapper
    try {
      sftp = await client.connect({
        sock: socket,
        host: this.host,
        port: this.port,
        username: this.username,
        ...(this.password === undefined ? {} : { password: this.password, tryKeyboard: true }),
        ...(this.privateKey === undefined ? {} : { privateKey: this.privateKey }),
        ...(this.passphrase === undefined ? {} : { passphrase: this.passphrase }),
        readyTimeout: this.tuning.readyTimeoutMs,
        keepaliveInterval: this.tuning.keepaliveIntervalMs,
        keepaliveCountMax: 4,
        hostVerifier,
        // No `agent`: ssh2 then never uses an SSH agent of the process running this driver.
      })
    } catch (err) {
      this.connecting.delete(socket)
      await client.end().catch(() => {})
      socket.destroy()
      if (this.closing) throw closedError(this.where)
      if (hostKeyRefusal !== undefined) throw hostKeyRefusal
      throw this.fail(firstError ?? err, 'connect')
    }
    // Nagle's algorithm delays SFTP's many small request packets: a 50 MB put takes ~30 s instead of < 1 s.
    // (Already off on our socket; said again here for any transport ssh2 may wrap around it.)
    this.connecting.delete(socket)
    const ssh = (client as unknown as { client: SshClient }).client
    ssh.setNoDelay(true)
    failFastClose(sftp)
    if (this.closing) {
      await client.end().catch(() => {})
      throw closedError(this.where)
    }
    const extensions = new Set(Object.keys((sftp as unknown as { _extensions?: Record<string, string> })._extensions ?? {}))
    const session: Session = { client, ssh, sftp, base: this.basePath, extensions, madeDirs: new Set(), closed: false }
    ssh.on('close', () => { session.closed = true })
    ssh.on('end', () => { session.closed = true })
    try {
      session.base = await this.checkBase(session)
    } catch (err) {
      session.closed = true
      await client.end().catch(() => {})
      throw err
    }
    return session
  }

  /** The destination directory, absolute; CONTAINER_NOT_FOUND when it does not exist or is not a directory. */
  private async checkBase (session: Session): Promise<string> {
    const o = ops(session.sftp)
    try {
      const absolute = await o.realpath(this.basePath)
      const st = await o.stat(absolute)
      if (!isDir(st.mode)) throw new CloudPilotError('CONTAINER_NOT_FOUND', `sftp ${this.where}: ${this.basePath} is not a directory`, { hint: 'Point the destination path at a directory on the server.' })
      return absolute
    } catch (err) {
      if (err instanceof CloudPilotError) throw err
      if (sftpStatusOf(err) === 2) throw new CloudPilotError('CONTAINER_NOT_FOUND', `sftp ${this.where}: directory ${this.basePath} does not exist on the server`, { cause: err, hint: 'Create the directory on the server (writable by the SSH user) or fix the destination path.' })
      throw this.fail(err, 'connect', this.basePath)
    }
  }

  private async sessionFor (signal?: AbortSignal): Promise<Session> {
    if (this.closing) throw closedError(this.where)
    let current = this.session
    if (current !== undefined) {
      const s = await abortable(current.catch(() => undefined), signal)
      if (s !== undefined && !s.closed) return s
      if (this.session === current) this.session = undefined
    }
    current = this.session ?? withRetries(async () => await this.connectOnce(), { policy: this.tuning.retry })
    this.session = current
    current.catch(() => { if (this.session === current) this.session = undefined })
    return await abortable(current, signal)
  }

  /**
   * Runs an idempotent request on the session; when the connection turns out to be gone, reconnects and tries
   * again (bounded, with backoff).
   */
  private async request<T> (op: SftpOperation, remotePath: string | undefined, signal: AbortSignal | undefined, fn: (s: Session, o: SftpOps) => Promise<T>): Promise<T> {
    throwIfAborted(signal)
    // Connecting has its own retries; here only a request that lost its connection is tried again.
    let lostConnection = false
    return await withRetries(async () => {
      lostConnection = false
      const s = await this.sessionFor(signal)
      try {
        return await abortable(fn(s, ops(s.sftp)), signal)
      } catch (err) {
        if (isConnectionLoss(err)) {
          s.closed = true
          lostConnection = true
        }
        throw this.fail(err, op, remotePath)
      }
    }, { policy: this.tuning.retry, signal, retryable: () => lostConnection })
  }

  // --- paths --------------------------------------------------------------------------------------------------

  private remote (s: Session, rel: string): string {
    return rel === '' ? s.base : path.posix.join(s.base, rel)
  }

  /** mkdir -p of a key's directory (relative to the base). */
  private async makeDirs (s: Session, relDir: string): Promise<void> {
    if (relDir === '' || relDir === '.' || s.madeDirs.has(relDir)) return
    const o = ops(s.sftp)
    const target = this.remote(s, relDir)
    const existing = await o.stat(target).catch(() => undefined)
    if (existing !== undefined && isDir(existing.mode)) { s.madeDirs.add(relDir); return }
    const parts = relDir.split('/')
    for (let i = 1; i <= parts.length; i++) {
      const rel = parts.slice(0, i).join('/')
      if (s.madeDirs.has(rel)) continue
      const dir = this.remote(s, rel)
      try {
        await o.mkdir(dir, { mode: 0o700 })
      } catch (err) {
        // Exists already (made meanwhile by a concurrent put): fine when it is a directory.
        const st = await o.stat(dir).catch(() => undefined)
        if (st === undefined || !isDir(st.mode)) {
          if (st !== undefined) throw new CloudPilotError('UPLOAD_FAILED', `put sftp ${this.where}:${dir}: a file is in the way of the directory`, { retryable: false })
          throw this.fail(err, 'put', dir)
        }
      }
      s.madeDirs.add(rel)
    }
  }

  /** NO_SUCH_FILE means OBJECT_NOT_FOUND only when the destination directory itself is still there. */
  private async missing (s: Session, err: unknown, op: SftpOperation, remotePath: string): Promise<Error> {
    if (sftpStatusOf(err) === 2) await this.checkBase(s)
    return this.fail(err, op, remotePath)
  }

  // --- StorageDriver ------------------------------------------------------------------------------------------

  async put (key: string, body: Readable, options: PutOptions = {}): Promise<PutResult> {
    const rel = checkKey(key)
    const { signal } = options
    if (aborted(signal)) {
      body.destroy()
      throw abortError(signal)
    }
    let s: Session
    try {
      s = await this.sessionFor(signal)
      await abortable(this.makeDirs(s, path.posix.dirname(rel)), signal)
    } catch (err) {
      body.destroy()
      if (aborted(signal)) throw abortError(signal)
      throw this.fail(err, 'put', rel)
    }
    const finalPath = this.remote(s, rel)
    const partPath = `${finalPath}.part-${randomBytes(6).toString('hex')}`
    const source = uploadSource(body, { rateLimitBytesPerSecond: this.rateLimit, signal })
    const sink = new SftpWriteStream(s.sftp, partPath, { concurrency: this.tuning.writeConcurrency, fsync: s.extensions.has('fsync@openssh.com'), mode: 0o600 })
    const onLost = (): void => { sink.destroy(connectionLost()) }
    s.ssh.once('close', onLost)
    try {
      await pipeline(source.stream, sink, signal === undefined ? {} : { signal })
      throwIfAborted(signal)
      await this.publish(s, partPath, finalPath)
    } catch (err) {
      s.ssh.off('close', onLost)
      if (!source.stream.destroyed) source.stream.destroy()
      if (isConnectionLoss(err)) s.closed = true
      await this.removePart(s, partPath, sink)
      if (aborted(signal)) throw abortError(signal)
      const fromSource = source.sourceFailure()
      if (fromSource !== undefined) throw sourceError(fromSource)
      throw await this.missing(s, err, 'put', finalPath).catch((e: unknown) => e)
    }
    s.ssh.off('close', onLost)
    return { key, sizeBytes: source.bytes() }
  }

  /** Renames the finished part file over the final key. */
  private async publish (s: Session, partPath: string, finalPath: string): Promise<void> {
    const o = ops(s.sftp)
    if (s.extensions.has('posix-rename@openssh.com')) {
      await o.posixRename(partPath, finalPath)
      return
    }
    // SFTP v3 rename refuses to replace an existing file.
    try {
      await o.rename(partPath, finalPath)
    } catch (err) {
      const existing = await o.lstat(finalPath).catch(() => undefined)
      if (existing === undefined || !isFile(existing.mode)) throw err
      await o.unlink(finalPath)
      await o.rename(partPath, finalPath)
    }
  }

  /** Removes the part file of a failed put; over a new connection when the failure was the connection's. */
  private async removePart (s: Session, partPath: string, sink: SftpWriteStream): Promise<void> {
    if (!sink.destroyed) sink.destroy()
    const deadline = AbortSignal.timeout(this.tuning.cleanupTimeoutMs)
    const removal = async (): Promise<void> => {
      const session = s.closed ? await this.sessionFor(deadline) : s
      await ops(session.sftp).unlink(partPath)
    }
    try {
      await abortable(removal(), deadline)
    } catch (err) {
      if (sftpStatusOf(err) === 2) return // never created, or already gone
      this.warn('could not remove the part file of a failed sftp put; remove it by hand', { where: this.where, path: partPath, error: redact(err instanceof Error ? err.message : String(err), this.secrets) })
    }
  }

  async get (key: string, options: GetOptions = {}): Promise<Readable> {
    const rel = checkKey(key)
    const range = options.range === undefined ? undefined : checkRange(options.range)
    const { signal } = options
    throwIfAborted(signal)
    const { stream, remotePath } = await this.request('get', rel, signal, async (s, o) => {
      const remotePath = this.remote(s, rel)
      let st: Stats
      try {
        st = await o.stat(remotePath)
      } catch (err) {
        throw await this.missing(s, err, 'get', remotePath)
      }
      if (!isFile(st.mode)) throw new CloudPilotError('OBJECT_NOT_FOUND', `get sftp ${this.where}:${remotePath}: no such object (a directory)`)
      if (range !== undefined && range.start >= st.size) return { stream: Readable.from([]), remotePath }
      const stream = s.sftp.createReadStream(remotePath, {
        highWaterMark: 256 * 1024,
        ...(range === undefined ? {} : { start: range.start, ...(range.end === undefined ? {} : { end: range.end }) }),
      })
      // Surface an open failure here (deleted meanwhile) rather than as a stream error.
      await new Promise<void>((resolve, reject) => {
        const onOpen = (): void => { stream.off('error', onError); resolve() }
        const onError = (err: Error): void => { stream.off('open', onOpen); reject(err) }
        stream.once('open', onOpen)
        stream.once('error', onError)
      })
      // ssh2 never answers a read sent after the connection dropped: end the stream when it drops.
      const onLost = (): void => { stream.destroy(connectionLost()) }
      s.ssh.once('close', onLost)
      stream.once('close', () => s.ssh.off('close', onLost))
      return { stream, remotePath }
    })
    return downloadStream(stream, (err) => this.fail(err, 'get', remotePath), signal)
  }

  async stat (key: string, options: CallOptions = {}): Promise<ObjectInfo | null> {
    const rel = checkKey(key)
    return await this.request('stat', rel, options.signal, async (s, o) => {
      const remotePath = this.remote(s, rel)
      try {
        const st = await o.stat(remotePath)
        if (!isFile(st.mode)) return null
        return { key, sizeBytes: st.size, modifiedAt: new Date(st.mtime * 1000) }
      } catch (err) {
        if (sftpStatusOf(err) !== 2) throw err
        await this.checkBase(s)
        return null
      }
    })
  }

  async delete (key: string, options: CallOptions = {}): Promise<void> {
    const rel = checkKey(key)
    await this.request('delete', rel, options.signal, async (s, o) => {
      const remotePath = this.remote(s, rel)
      try {
        await o.unlink(remotePath)
      } catch (err) {
        const st = await o.lstat(remotePath).catch(() => undefined)
        if (st === undefined && sftpStatusOf(err) === 2) {
          // Deleting from a directory that is gone must not look like success to retention.
          await this.checkBase(s)
          return
        }
        if (st !== undefined && isDir(st.mode)) return // a "directory" of keys is not an object
        throw err
      }
    })
  }

  async list (prefix: string, options: ListOptions = {}): Promise<ListPage> {
    if (typeof prefix !== 'string' || prefix.includes('\0') || prefix.includes('\\')) throw new CloudPilotError('VALIDATION_FAILED', 'list prefix contains a forbidden character')
    const cut = prefix.lastIndexOf('/')
    const dirPart = cut === -1 ? '' : prefix.slice(0, cut)
    const namePrefix = prefix.slice(cut + 1)
    if (dirPart !== '') checkKey(dirPart)
    const limit = Math.min(Math.max(Math.trunc(options.limit ?? 1000), 1), 10_000)
    const after = options.cursor ?? ''
    const { signal } = options
    const keys = await this.request('list', dirPart, signal, async (s, o) => {
      const found: ObjectInfo[] = []
      const walk = async (relDir: string, filter: string): Promise<void> => {
        throwIfAborted(signal)
        let entries: FileEntryWithStats[]
        try {
          entries = await o.readdir(this.remote(s, relDir))
        } catch (err) {
          if (sftpStatusOf(err) === 2) {
            if (relDir === dirPart) await this.checkBase(s)
            return
          }
          throw err
        }
        const subdirs: string[] = []
        for (const entry of entries) {
          const name = entry.filename
          if (name === '.' || name === '..' || !name.startsWith(filter)) continue
          const rel = relDir === '' ? name : `${relDir}/${name}`
          if (isDir(entry.attrs.mode)) subdirs.push(rel)
          else if (isFile(entry.attrs.mode) && !PART_SUFFIX.test(name) && rel > after) {
            found.push({ key: rel, sizeBytes: entry.attrs.size, modifiedAt: new Date(entry.attrs.mtime * 1000) })
          }
        }
        // A subdirectory whose every key sorts before the cursor needs no visit.
        for (const sub of subdirs) {
          if (after > `${sub}/` && !after.startsWith(`${sub}/`)) continue
          await walk(sub, '')
        }
      }
      await walk(dirPart, namePrefix)
      return found
    })
    keys.sort((a, b) => a.key < b.key ? -1 : a.key > b.key ? 1 : 0)
    const items = keys.slice(0, limit)
    return { items, nextCursor: keys.length > limit ? (items.at(-1)?.key ?? null) : null }
  }

  async test (options: CallOptions = {}): Promise<TestResult> {
    const result = await probeRoundTrip(this, options)
    return this.seenFingerprint === undefined ? result : { ...result, hostKeyFingerprint: this.seenFingerprint }
  }

  async close (): Promise<void> {
    this.closing = true
    // A connection still being made is not waited for (a silent server would hold close() for readyTimeoutMs).
    for (const socket of this.connecting) socket.destroy()
    const current = this.session
    this.session = undefined
    const s = await current?.catch(() => undefined)
    if (s !== undefined && !s.closed) await s.client.end().catch(() => {})
  }
}

function closedError (where: string): CloudPilotError {
  return new CloudPilotError('UPLOAD_FAILED', `sftp ${where}: the driver was closed`, { retryable: false })
}
