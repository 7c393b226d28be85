import { Writable } from 'node:stream'
import type { SFTPWrapper } from 'ssh2'

export interface SftpWriteStreamOptions {
  /** WRITE requests in flight at once (SFTP answers each; one at a time is latency-bound on a WAN). */
  concurrency: number
  /** Call fsync@openssh.com before closing, when the server offers it. */
  fsync: boolean
  mode: number
}

/**
 * A file on an SFTP server as a Writable, created exclusively (`wx`). Unlike ssh2's own WriteStream it keeps
 * several WRITE requests in flight, and it ends ('finish') only once every write was acknowledged, the data was
 * fsynced (when the server supports fsync@openssh.com) and the handle was closed without error, so a caller may
 * rename the file into place right after.
 */
export class SftpWriteStream extends Writable {
  private readonly sftp: SFTPWrapper
  private readonly path: string
  private readonly options: SftpWriteStreamOptions
  private handle: Buffer | undefined
  private position = 0
  private inFlight = 0
  private failure: Error | undefined
  private waitingWrite: ((err?: Error | null) => void) | undefined
  private waitingDrain: (() => void) | undefined

  constructor (sftp: SFTPWrapper, path: string, options: SftpWriteStreamOptions) {
    super({ highWaterMark: 1024 * 1024 })
    this.sftp = sftp
    this.path = path
    this.options = options
  }

  override _construct (callback: (err?: Error | null) => void): void {
    if (!channelOpen(this.sftp)) { callback(connectionLost()); return }
    this.sftp.open(this.path, 'wx', { mode: this.options.mode }, (err, handle) => {
      if (err !== undefined && err !== null) { callback(err); return }
      this.handle = handle
      callback()
    })
  }

  override _write (chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    const handle = this.handle
    if (handle === undefined) { callback(new Error('the remote file is not open')); return }
    if (this.failure !== undefined) { callback(this.failure); return }
    if (!channelOpen(this.sftp)) { callback(connectionLost()); return }
    const position = this.position
    this.position += chunk.length
    this.inFlight++
    this.sftp.write(handle, chunk, 0, chunk.length, position, (err) => {
      this.inFlight--
      if (err !== undefined && err !== null) this.failure ??= err
      const waiting = this.waitingWrite
      if (waiting !== undefined && (this.failure !== undefined || this.inFlight < this.options.concurrency)) {
        this.waitingWrite = undefined
        waiting(this.failure)
      } else if (waiting === undefined && this.failure !== undefined && this.waitingDrain === undefined && !this.destroyed) {
        this.destroy(this.failure)
      }
      if (this.inFlight === 0) this.waitingDrain?.()
    })
    if (this.inFlight < this.options.concurrency) callback()
    else this.waitingWrite = callback
  }

  override _final (callback: (err?: Error | null) => void): void {
    const finish = (): void => {
      this.waitingDrain = undefined
      if (this.failure !== undefined) { callback(this.failure); return }
      const handle = this.handle
      if (handle === undefined) { callback(); return }
      if (!channelOpen(this.sftp)) { callback(connectionLost()); return }
      const close = (): void => {
        this.sftp.close(handle, (err) => {
          this.handle = undefined
          callback(err ?? null)
        })
      }
      if (!this.options.fsync) { close(); return }
      this.sftp.ext_openssh_fsync(handle, (err) => {
        if (err !== undefined && err !== null) { callback(err); return }
        close()
      })
    }
    if (this.inFlight === 0) finish()
    else this.waitingDrain = finish
  }

  override _destroy (err: Error | null, callback: (err?: Error | null) => void): void {
    const handle = this.handle
    this.handle = undefined
    // Close without waiting for the answer: on a connection that is gone it would never come. A request sent
    // after this one on the same channel (the caller's unlink of the file) is handled after it.
    if (handle !== undefined && channelOpen(this.sftp)) {
      try { this.sftp.close(handle, () => {}) } catch { /* the connection is gone: so is the handle */ }
    }
    callback(err)
  }
}

/**
 * Whether the SFTP channel can still carry requests. ssh2 fails the requests pending when a connection drops, but
 * keeps (and never answers) a request made after that: check before each one.
 */
export function channelOpen (sftp: SFTPWrapper): boolean {
  const channel = sftp as unknown as { incoming?: { state?: string }, outgoing?: { state?: string } }
  // When the socket dies ssh2 marks the incoming side closed (and fails the pending requests); the outgoing
  // side of an SFTP channel keeps saying 'open'.
  return channel.incoming?.state !== 'closed' && (channel.outgoing?.state ?? 'open') === 'open'
}

/**
 * Makes `close` of a handle answer at once (with an error) on a dead channel: ssh2's streams close their handle
 * when destroyed and wait for the answer before they report the error, which would never come.
 */
export function failFastClose (sftp: SFTPWrapper): void {
  const close = sftp.close.bind(sftp)
  sftp.close = (handle: Buffer, callback: (err?: Error | null) => void): void => {
    if (!channelOpen(sftp)) { process.nextTick(callback, connectionLost()); return }
    close(handle, callback)
  }
}

export function connectionLost (): Error {
  return Object.assign(new Error('No SFTP connection: the connection was lost'), { code: 6 })
}
