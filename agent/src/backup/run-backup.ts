import { createWriteStream, type WriteStream } from 'node:fs'
import { chmod, mkdir, rename, rm, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { Readable, Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import {
  CloudPilotError, PRODUCT_VERSION, archiveContentType, archiveExtension, manifestKey,
  type BackupJob, type DatabaseSource, type FilesSource, type FullSource,
} from '@cloudpilot/protocol'
import { isAbortError, type PutResult, type StorageDriver } from '@cloudpilot/storage'
import type { BackupContext, BackupManifest, BackupResult, RunBackup } from './backup-context.ts'
import { createCompressor } from '../pipeline/compressor.ts'
import { HashCounter } from '../pipeline/hash-counter.ts'
import { ProgressMeter } from '../pipeline/progress-meter.ts'
import { Tee, type TeeSink } from '../pipeline/tee.ts'
import type { ArchiveSource, SourceOptions } from '../sources/archive-source.ts'
import { ProcessRegistry, type SpawnToolOptions } from '../sources/child-process.ts'
import { mapSpoolError, mapUploadError } from '../sources/error-mapping.ts'
import { openFilesArchive } from '../sources/files-archive.ts'
import { openFullArchive } from '../sources/full-archive.ts'
import { openMysqlDump } from '../sources/mysql-dump.ts'
import { openPostgresDump } from '../sources/postgres-dump.ts'
import { findTool, toolVersion } from '../sources/tool-detect.ts'

/** Buffer of each sink (spool file, upload body): bounds memory per job whatever the archive size. */
const SINK_HIGH_WATER_MARK = 1024 * 1024

export interface RunBackupOptions {
  /** PATH the dump tools and pigz are looked up on (default: the agent's PATH). */
  path?: string
  /** Use pigz for gzip when it is installed (default true); false forces node:zlib. */
  pigz?: boolean
  /** Run dump tools under coreutils' `stdbuf -o 1M` when it is installed (default true): fewer, larger reads. */
  stdbuf?: boolean
  /** Threads for pigz (default: available parallelism). */
  cores?: number
  /** Interval of ctx.onProgress (default 500 ms). */
  progressIntervalMs?: number
  /** Directory for the private secret-file directory (default: os.tmpdir()). */
  secretDir?: string
  /** Told about every child process started (pid and executable). */
  onSpawn?: SpawnToolOptions['onSpawn']
  agentVersion?: string
}

/**
 * Builds the backup runner. One `stream.pipeline` per job, under the job's AbortSignal:
 *
 *   source (pg_dump | mariadb-dump | tar walk) -> raw byte counter -> compress (pigz | zlib | zstd | none)
 *     -> sha256 + byte counter -> tee: spool file `<spoolDir>/<jobId><ext>.part` (keepLocal)
 *                                      upload body -> driver.put(objectKey) (destination)
 *
 * The tee moves at the pace of its slowest sink, so memory stays flat; with a destination and no local copy
 * nothing touches the disk. After the bytes: the object is verified with stat (size), the spool file is renamed
 * into place and the manifest is written beside each copy. Any failure or abort kills the tools' process
 * groups, aborts the upload (the driver leaves nothing under the key) and removes the partial spool file.
 */
export function createRunBackup (options: RunBackupOptions = {}): RunBackup {
  return async (job, ctx) => await runOne(job, ctx, options)
}

export const runBackup: RunBackup = createRunBackup()

async function runOne (job: BackupJob, ctx: BackupContext, options: RunBackupOptions): Promise<BackupResult> {
  ctx.signal.throwIfAborted()
  if (job.type !== 'database' && job.type !== 'files' && job.type !== 'full') {
    throw new CloudPilotError('UNSUPPORTED', `Backups of type ${job.type} are not supported by this agent version yet.`)
  }
  if (job.encryption !== null) {
    // Fail closed: never write an unencrypted archive for a plan that asks for encryption.
    throw new CloudPilotError('ENCRYPTION_UNAVAILABLE', 'This agent version cannot encrypt archives yet; the backup was not made (nothing unencrypted was written).')
  }
  if (job.destination === null && !job.keepLocal) {
    throw new CloudPilotError('VALIDATION_FAILED', 'The job has neither a destination nor a local copy: there is nowhere to write the archive.')
  }

  const log = ctx.log.child({ backupId: job.jobId, planId: job.planId, type: job.type })
  const createdAt = new Date()
  const extension = archiveExtension(job.type, job.compression, false)
  const internal = new AbortController()
  const signal = AbortSignal.any([ctx.signal, internal.signal])
  const registry = new ProcessRegistry()
  const sourceOptions: SourceOptions = { signal, log, registry }
  if (options.path !== undefined) sourceOptions.path = options.path
  if (options.secretDir !== undefined) sourceOptions.secretDir = options.secretDir
  if (options.onSpawn !== undefined) sourceOptions.onSpawn = options.onSpawn
  if (options.stdbuf !== undefined) sourceOptions.stdbuf = options.stdbuf

  let source: ArchiveSource | null = null
  let driver: StorageDriver | null = null
  let partPath: string | null = null
  let localPath: string | null = null
  let localManifestPath: string | null = null
  let uploading = false
  let uploadedKeys: string[] = []
  let uploadFailure: Error | null = null
  let upload: Promise<PutResult> | null = null
  let meter: ProgressMeter | null = null
  let spool: WriteStream | null = null

  try {
    source = await openSource(job, sourceOptions, createdAt)
    if (job.destination !== null) {
      const destination = job.destination
      driver = await ctx.openDestination(destination).catch((err: unknown) => { throw mapUploadError(err, destination.type) })
    }

    if (job.keepLocal) {
      await mkdir(ctx.spoolDir, { recursive: true, mode: 0o700 }).catch((err: unknown) => { throw mapSpoolError(err, ctx.spoolDir) })
      localPath = path.join(ctx.spoolDir, `${job.jobId}${extension}`)
      partPath = `${localPath}.part`
      const spoolPart = partPath
      spool = createWriteStream(spoolPart, { flags: 'w', mode: 0o600, flush: true, highWaterMark: SINK_HIGH_WATER_MARK })
      await new Promise<void>((resolve, reject) => {
        spool?.once('open', () => { resolve() })
        spool?.once('error', (err) => { reject(mapSpoolError(err, spoolPart)) })
      })
    }

    const pigzPath = job.compression === 'gzip' && options.pigz !== false ? await findTool('pigz', options.path) : null
    const compressorOptions: Parameters<typeof createCompressor>[1] = { pigzPath, signal, registry }
    if (options.cores !== undefined) compressorOptions.cores = options.cores
    if (options.onSpawn !== undefined) compressorOptions.onSpawn = options.onSpawn
    const compressor = createCompressor(job.compression, compressorOptions)

    const activeMeter = new ProgressMeter({
      onProgress: (p) => { ctx.onProgress(p) },
      phase: job.type === 'database' ? 'dumping' : 'archiving',
      ...(options.progressIntervalMs === undefined ? {} : { intervalMs: options.progressIntervalMs }),
    })
    meter = activeMeter
    const raw = new HashCounter({ hash: false })
    // Progress counts the bytes the destination has taken (its reader sets the pace, incl. a rate limit), or
    // the bytes written to the local copy when there is no destination.
    const hashed = new HashCounter({ onBytes: (n) => { if (driver === null) activeMeter.add(n) } })

    const sinks: TeeSink[] = []
    if (spool !== null && partPath !== null) {
      const spoolPart = partPath
      sinks.push({ stream: spool, mapError: (err) => mapSpoolError(err, spoolPart), awaitClose: true })
    }
    let body: Transform | null = null
    if (driver !== null) {
      body = new Transform({
        highWaterMark: SINK_HIGH_WATER_MARK,
        transform (chunk: Buffer, _encoding, callback) {
          activeMeter.add(chunk.length)
          callback(null, chunk)
        },
      })
      sinks.push({ stream: body })
    }
    const tee = new Tee(sinks)

    if (driver !== null && body !== null) {
      const uploadBody = body
      const destinationType = driver.type
      uploading = true
      ctx.onOffsiteStatus('uploading')
      upload = driver.put(job.objectKey, uploadBody, { signal, contentType: archiveContentType(extension) })
      upload.then(() => {
        if (!uploadBody.writableEnded) {
          uploadFailure ??= new CloudPilotError('UPLOAD_FAILED', `The ${destinationType} destination finished the upload before the archive ended.`)
          internal.abort(uploadFailure)
        }
      }, (err: unknown) => {
        // A put that fails because we tore the pipeline down is not an upload failure.
        if (tee.destroyed || signal.aborted) return
        uploadFailure ??= mapUploadError(err, destinationType)
        internal.abort(uploadFailure)
      })
    }

    log.info({ compression: job.compression, compressor: compressor.implementation, keepLocal: job.keepLocal, destination: driver?.type ?? null }, 'backup started')
    activeMeter.start()
    try {
      await pipeline(source.readable, raw, compressor.stream, hashed, tee, { signal })
    } catch (err) {
      activeMeter.stop()
      throw err
    }

    const sizeBytes = hashed.bytes
    const sha256 = hashed.sha256

    if (driver !== null && upload !== null) {
      let put: PutResult
      try {
        activeMeter.phase = 'uploading'
        put = await upload
      } catch (err) {
        throw uploadFailure ?? mapUploadError(err, driver.type)
      } finally {
        activeMeter.stop()
      }
      activeMeter.phase = 'verifying'
      uploadedKeys = [job.objectKey]
      let info
      try {
        info = await driver.stat(job.objectKey, { signal })
      } catch (err) {
        throw mapUploadError(err, driver.type)
      }
      if (info === null) throw new CloudPilotError('VERIFY_FAILED', `The uploaded object ${job.objectKey} is not at the destination after the upload.`)
      if (info.sizeBytes !== sizeBytes || put.sizeBytes !== sizeBytes) {
        throw new CloudPilotError('VERIFY_FAILED', `The uploaded object ${job.objectKey} has ${info.sizeBytes} bytes (driver counted ${put.sizeBytes}); the archive has ${sizeBytes}.`)
      }
    }

    activeMeter.stop()
    if (partPath !== null && localPath !== null) {
      await rename(partPath, localPath)
      partPath = null
    }

    const finishedAt = new Date()
    const tools = { ...source.tools }
    if (compressor.implementation === 'pigz') tools.pigz = await toolVersion('pigz', options.path) ?? 'unknown'
    if (compressor.implementation === 'zlib') tools.zlib = process.versions.zlib ?? 'unknown'
    if (compressor.implementation === 'zstd') tools.zstd = process.versions.zstd ?? 'unknown'
    const manifest: BackupManifest = {
      format: 'cloudpilot-backup-manifest/1',
      backupId: job.jobId,
      planId: job.planId,
      serverId: job.serverId,
      type: job.type,
      engine: job.type === 'database' ? (job.source as DatabaseSource).engine : job.type === 'full' ? (job.source as FullSource).database.engine : null,
      databases: job.type === 'database' ? [...(job.source as DatabaseSource).databases] : job.type === 'full' ? [...(job.source as FullSource).database.databases] : [],
      paths: job.type === 'files' || job.type === 'full' ? [...(job.source as FilesSource).paths] : [],
      compression: job.compression,
      encrypted: false,
      sizeBytes,
      sha256,
      rawBytes: raw.bytes,
      fileName: path.posix.basename(job.objectKey),
      createdAt: createdAt.toISOString(),
      finishedAt: finishedAt.toISOString(),
      tools,
      agentVersion: options.agentVersion ?? PRODUCT_VERSION,
    }
    const manifestJson = JSON.stringify(manifest, null, 2) + '\n'

    if (driver !== null) {
      const key = manifestKey(job.objectKey)
      try {
        await driver.put(key, Readable.from([Buffer.from(manifestJson)]), { signal, contentType: 'application/json' })
      } catch (err) {
        throw mapUploadError(err, driver.type)
      }
      uploadedKeys.push(key)
    }
    if (localPath !== null) {
      localManifestPath = `${localPath}.manifest.json`
      const tmp = `${localManifestPath}.part`
      try {
        await writeFile(tmp, manifestJson, { mode: 0o600 })
        await chmod(tmp, 0o600)
        await rename(tmp, localManifestPath)
      } catch (err) {
        await rm(tmp, { force: true }).catch(() => {})
        throw mapSpoolError(err, localManifestPath)
      }
    }

    const seconds = (finishedAt.getTime() - createdAt.getTime()) / 1000
    const bytesPerSecond = seconds > 0 ? Math.round(sizeBytes / seconds) : sizeBytes
    ctx.onProgress({ bytes: sizeBytes, bytesPerSecond, phase: 'completed' })
    if (driver !== null) ctx.onOffsiteStatus('uploaded')
    log.info({ sizeBytes, rawBytes: raw.bytes, sha256, seconds, bytesPerSecond, localPath, objectKey: driver === null ? null : job.objectKey }, 'backup completed')
    return {
      sizeBytes,
      sha256,
      localPath,
      objectKey: driver === null ? null : job.objectKey,
      offsiteStatus: driver === null ? null : 'uploaded',
      manifest,
    }
  } catch (err) {
    const failure = chooseFailure(err, ctx.signal, internal.signal, uploadFailure)
    if (!internal.signal.aborted) internal.abort(failure)
    meter?.stop()
    spool?.destroy()
    await registry.terminateAll()
    if (upload !== null) await upload.catch(() => {})
    if (partPath !== null) await rm(partPath, { force: true }).catch(() => {})
    if (localPath !== null && partPath === null) await rm(localPath, { force: true }).catch(() => {})
    if (localManifestPath !== null) await rm(localManifestPath, { force: true }).catch(() => {})
    if (driver !== null && uploadedKeys.length > 0) {
      const d = driver
      for (const key of uploadedKeys) await d.delete(key).catch((e: unknown) => { log.warn({ err: e, key }, 'could not delete the object of a failed backup') })
    }
    if (uploading) ctx.onOffsiteStatus('failed')
    if (isAbortError(failure) || failure === ctx.signal.reason) log.info({ reason: String((failure as Error).message) }, 'backup aborted')
    else log.warn({ err: failure }, 'backup failed')
    throw failure
  } finally {
    await registry.terminateAll()
    await source?.dispose().catch((err: unknown) => { log.warn({ err }, 'source cleanup failed') })
    await driver?.close().catch(() => {})
  }
}

async function openSource (job: BackupJob, options: SourceOptions, createdAt: Date): Promise<ArchiveSource> {
  const src = job.source
  if (job.type === 'database') {
    if (!('databases' in src) || !('engine' in src)) throw new CloudPilotError('VALIDATION_FAILED', 'A database backup needs a database source (engine, databases).')
    return src.engine === 'postgresql' ? await openPostgresDump(src, options) : await openMysqlDump(src, options)
  }
  if (job.type === 'full') {
    if (!('paths' in src) || !('database' in src)) throw new CloudPilotError('VALIDATION_FAILED', 'A full backup needs a full source (paths, exclude, database).')
    return await openFullArchive(src, { ...options, backupId: job.jobId, createdAt })
  }
  if (!('paths' in src) || 'database' in src) throw new CloudPilotError('VALIDATION_FAILED', 'A files backup needs a files source (paths, exclude).')
  return await openFilesArchive(src, options)
}

/** Which error the job fails with: the caller's abort reason first, then an upload failure, then the error. */
function chooseFailure (err: unknown, callerSignal: AbortSignal, internalSignal: AbortSignal, uploadFailure: Error | null): Error {
  if (callerSignal.aborted) {
    const reason: unknown = callerSignal.reason
    return reason instanceof Error ? reason : new DOMException(String(reason), 'AbortError')
  }
  if (uploadFailure !== null) return uploadFailure
  if (err instanceof CloudPilotError) return err
  if (isAbortError(err) && internalSignal.aborted && internalSignal.reason instanceof Error) return internalSignal.reason
  const message = err instanceof Error ? err.message : String(err)
  return new CloudPilotError('DUMP_FAILED', `The backup pipeline failed: ${message}`, { cause: err })
}
