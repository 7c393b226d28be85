import { createHash } from 'node:crypto'
import { createReadStream, createWriteStream } from 'node:fs'
import { mkdir, realpath, rm, statfs } from 'node:fs/promises'
import path from 'node:path'
import type { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { CloudPilotError, toErrorData, type RestoreJob } from '@cloudpilot/protocol'
import { isAbortError, type StorageDriver } from '@cloudpilot/storage'
import { HashCounter } from '../pipeline/hash-counter.ts'
import { ProgressMeter } from '../pipeline/progress-meter.ts'
import type { RestoreContext } from './restore-context.ts'

/** Archive bytes whose sha256 was checked against the backup's before the restore writes anything. */
export interface VerifiedArchive {
  kind: 'spool' | 'local-destination' | 'download'
  /** Opens the archive for the restore pass. */
  open (): Promise<Readable>
  /**
   * After the restore pass read every byte: an archive read in place (not copied) is hashed on that pass too,
   * and must still be the verified one (it could have been replaced between the passes).
   */
  checkSecondPass (): void
  /** Removes the downloaded copy; closes the driver. */
  dispose (): Promise<void>
  verifySeconds: number
}

/**
 * Gets the archive of a restore and verifies it BEFORE anything is written to the target:
 *
 * - a remote destination (S3, ...): downloaded once into `<spool>/<restoreId>.download.part` (0600), hashed while
 *   it is written, removed after. One download (egress is paid per byte), and the restore then reads exactly the
 *   bytes that were verified. Needs free space for the compressed archive in the spool (checked first: NO_SPACE).
 * - the agent's own spool copy, or a `local` destination (a directory on this server): read in place twice,
 *   first to hash, then to restore, hashing again; no copy.
 *
 * Size or sha256 different from the backup's: CHECKSUM_MISMATCH, nothing written. An object that cannot be
 * read: DOWNLOAD_FAILED.
 */
export async function openVerifiedArchive (job: RestoreJob, ctx: RestoreContext): Promise<VerifiedArchive> {
  const started = performance.now()
  const expected = { sha256: job.backup.sha256, sizeBytes: job.backup.sizeBytes }
  const local = job.archive.localPath === null ? null : await spoolFile(job.archive.localPath, ctx.spoolDir)
  if (local !== null) {
    const archive = await inPlace('spool', async () => createReadStream(local, { signal: ctx.signal, highWaterMark: 1024 * 1024 }), expected, ctx, null)
    archive.verifySeconds = (performance.now() - started) / 1000
    return archive
  }
  const destination = job.archive.destination
  const key = job.archive.objectKey
  if (destination === null || key === null) {
    throw new CloudPilotError('DOWNLOAD_FAILED', job.archive.localPath === null
      ? 'The restore names no archive to read (neither a local copy nor a destination object).'
      : `The local copy ${job.archive.localPath} no longer exists on this server and the backup has no offsite copy.`, { hint: 'Pick another backup.' })
  }
  let driver: StorageDriver
  try {
    driver = await ctx.openDestination(destination)
  } catch (err) {
    throw downloadFailed(err, destination.type, key)
  }
  const get = async (): Promise<Readable> => {
    try {
      return await driver.get(key, { signal: ctx.signal })
    } catch (err) {
      throw downloadFailed(err, destination.type, key)
    }
  }
  try {
    if (destination.type === 'local') {
      const archive = await inPlace('local-destination', get, expected, ctx, driver)
      archive.verifySeconds = (performance.now() - started) / 1000
      return archive
    }
    const archive = await download(job, get, expected, ctx, driver)
    archive.verifySeconds = (performance.now() - started) / 1000
    return archive
  } catch (err) {
    await driver.close().catch(() => {})
    throw err
  }
}

/** The spool copy, when it still exists and really is inside the spool directory; else null (use the offsite copy). */
async function spoolFile (localPath: string, spoolDir: string): Promise<string | null> {
  let real: string
  try {
    real = await realpath(localPath)
  } catch {
    return null
  }
  const root = await realpath(spoolDir).catch(() => path.resolve(spoolDir))
  if (!real.startsWith(root + path.sep)) throw new CloudPilotError('FORBIDDEN', `The local copy ${localPath} is outside the agent's spool directory.`)
  return real
}

interface Expected { sha256: string, sizeBytes: number }

async function inPlace (kind: 'spool' | 'local-destination', open: () => Promise<Readable>, expected: Expected, ctx: RestoreContext, driver: StorageDriver | null): Promise<VerifiedArchive> {
  const meter = new ProgressMeter({ onProgress: (p) => { ctx.onProgress(p) }, phase: 'verifying' })
  // The check pass only hashes: a plain loop over the reads, no stream stages.
  const hash = createHash('sha256')
  let bytes = 0
  meter.start()
  try {
    const source = await open()
    ctx.signal.throwIfAborted()
    for await (const chunk of source) {
      const buf = chunk as Buffer
      hash.update(buf)
      bytes += buf.length
      meter.add(buf.length)
    }
    ctx.signal.throwIfAborted()
  } catch (err) {
    throw readFailed(err, kind)
  } finally {
    meter.stop()
  }
  checkDigest({ bytes, sha256: hash.digest('hex') }, expected, 'before the restore; nothing was written to the target')
  let second: HashCounter | null = null
  return {
    kind,
    verifySeconds: 0,
    open: async () => {
      const hash = new HashCounter()
      second = hash
      const source = await open().catch((err: unknown) => { throw readFailed(err, kind) })
      source.once('error', (err) => { hash.destroy(readFailed(err, kind)) })
      return source.pipe(hash)
    },
    checkSecondPass: () => {
      if (second === null) return
      checkDigest(second, expected, 'while it was being restored: it was replaced between the check and the restore')
    },
    dispose: async () => { await driver?.close().catch(() => {}) },
  }
}

async function download (job: RestoreJob, get: () => Promise<Readable>, expected: Expected, ctx: RestoreContext, driver: StorageDriver): Promise<VerifiedArchive> {
  const file = path.join(ctx.spoolDir, `${job.jobId}.download.part`)
  await mkdir(ctx.spoolDir, { recursive: true, mode: 0o700 }).catch((err: unknown) => { throw spoolError(err, ctx.spoolDir) })
  const free = await statfs(ctx.spoolDir).then((s) => s.bavail * s.bsize, () => null)
  if (free !== null && free < expected.sizeBytes) {
    throw new CloudPilotError('NO_SPACE', `The archive (${expected.sizeBytes} bytes) is checked in the spool ${ctx.spoolDir} before it is restored, and only ${free} bytes are free there; nothing was written to the target.`, { hint: 'Free disk space in the agent\'s spool directory (spoolDir in agent.json), or point spoolDir at a larger disk.' })
  }
  const meter = new ProgressMeter({ onProgress: (p) => { ctx.onProgress(p) }, phase: 'downloading' })
  const hash = new HashCounter({ onBytes: (n) => { meter.add(n) } })
  meter.start()
  try {
    const source = await get()
    await pipeline(source, hash, createWriteStream(file, { flags: 'wx', mode: 0o600, highWaterMark: 1024 * 1024 }), { signal: ctx.signal })
  } catch (err) {
    await rm(file, { force: true }).catch(() => {})
    if (err instanceof CloudPilotError || isAbortError(err)) throw err
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOSPC' || code === 'EDQUOT' || code === 'EACCES' || code === 'EEXIST') throw spoolError(err, file)
    throw downloadFailed(err, driver.type, job.archive.objectKey ?? '')
  } finally {
    meter.stop()
  }
  try {
    checkDigest(hash, expected, 'after the download; nothing was written to the target')
  } catch (err) {
    await rm(file, { force: true }).catch(() => {})
    throw err
  }
  return {
    kind: 'download',
    verifySeconds: 0,
    open: async () => createReadStream(file, { signal: ctx.signal, highWaterMark: 256 * 1024 }),
    checkSecondPass: () => {},
    dispose: async () => {
      await rm(file, { force: true }).catch(() => {})
      await driver.close().catch(() => {})
    },
  }
}

function checkDigest (hash: { bytes: number, sha256: string }, expected: Expected, when: string): void {
  if (hash.bytes !== expected.sizeBytes || hash.sha256 !== expected.sha256) {
    throw new CloudPilotError('CHECKSUM_MISMATCH', `The archive has ${hash.bytes} bytes with sha256 ${hash.sha256}; the backup recorded ${expected.sizeBytes} bytes with sha256 ${expected.sha256} (checked ${when}).`)
  }
}

function downloadFailed (err: unknown, type: string, key: string): Error {
  if (isAbortError(err)) return err as Error
  const data = toErrorData(err, 'DOWNLOAD_FAILED')
  if (data.code === 'DOWNLOAD_FAILED') return new CloudPilotError('DOWNLOAD_FAILED', data.message, { cause: err })
  return new CloudPilotError('DOWNLOAD_FAILED', `Reading ${key} from the ${type} destination failed: ${data.code}: ${data.message}`, {
    cause: err,
    hint: data.code === 'OBJECT_NOT_FOUND' ? 'The object is gone from the destination (deleted by retention or by hand): restore another backup.' : 'Run Test Connection on the destination (POST /api/v1/destinations/:id/test) and check that the object still exists.',
  })
}

function readFailed (err: unknown, kind: 'spool' | 'local-destination'): Error {
  if (err instanceof CloudPilotError || isAbortError(err)) return err as Error
  const message = err instanceof Error ? err.message : String(err)
  return new CloudPilotError('DOWNLOAD_FAILED', `Reading the archive from the ${kind === 'spool' ? 'local copy' : 'local destination'} failed: ${message}`, { cause: err })
}

function spoolError (err: unknown, file: string): Error {
  if (err instanceof CloudPilotError || isAbortError(err)) return err as Error
  const code = (err as NodeJS.ErrnoException).code
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new CloudPilotError('NO_SPACE', `No space left in the spool while downloading the archive to ${file}; nothing was written to the target.`, { cause: err, hint: 'Free disk space in the agent\'s spool directory, or point spoolDir at a larger disk.' })
  }
  const message = err instanceof Error ? err.message : String(err)
  return new CloudPilotError('DOWNLOAD_FAILED', `Writing the downloaded archive to ${file} failed: ${message}`, { cause: err })
}
