import { PassThrough, type Readable, type Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import zlib from 'node:zlib'
import tar, { type Header } from 'tar-stream'

/** A tar entry as tar-stream's extract yields it. */
type Entry = AsyncIterable<unknown> & { header: Header }
import { CloudPilotError, type Compression, type RestoreJob } from '@cloudpilot/protocol'
import { isAbortError } from '@cloudpilot/storage'
import { HashCounter } from '../pipeline/hash-counter.ts'
import { ProgressMeter } from '../pipeline/progress-meter.ts'
import type { SourceOptions } from '../sources/archive-source.ts'
import { ProcessRegistry, type SpawnToolOptions } from '../sources/child-process.ts'
import { FULL_MANIFEST, FULL_MANIFEST_FORMAT, isFullMetadata, parseDumpPart, type FullManifest } from '../sources/full-layout.ts'
import { openVerifiedArchive, type VerifiedArchive } from './archive-input.ts'
import { DatabaseRestorer, planDatabases, type DatabasePlan, type DatabaseStream } from './database-restore.ts'
import { SectionMissing, layoutError, multiDatabaseLayout, splitAtDelimiters } from './dump-sections.ts'
import { FileExtractor, checkTargetPath, type FilesRestored } from './file-extractor.ts'
import type { RestoreContext, RestoreResult, RunRestore } from './restore-context.ts'

/** Output chunk of the decompressor (larger chunks, fewer writes to psql/mysql). */
const CHUNK_SIZE = 128 * 1024
/** Largest cloudpilot/manifest.json read from a full archive. */
const MAX_MANIFEST_BYTES = 1024 * 1024
/** Largest MySQL header (session settings) replayed before each database of a multi-database dump. */
const MAX_PREAMBLE_BYTES = 1024 * 1024

export interface RunRestoreOptions {
  /** PATH psql / mysql are looked up on (default: the agent's). */
  path?: string
  /** Directory for the private secret-file directory (default: os.tmpdir()). */
  secretDir?: string
  onSpawn?: SpawnToolOptions['onSpawn']
  progressIntervalMs?: number
}

/**
 * Builds the restore runner. One restore:
 *
 *   preflight: the target database server (client installed, reachable, login, DATABASE_EXISTS unless
 *              replaceExisting, CREATEDB/ownership) and the target path (TARGET_NOT_EMPTY unless replaceExisting)
 *   verify:    the archive's size and sha256 against the backup's (archive-input.ts): CHECKSUM_MISMATCH before
 *              anything is written
 *   restore:   archive -> decompress -> psql/mysql stdin (database dumps, split per database when several)
 *                                    -> tar entries -> files under targetPath / dumps of a full archive
 *
 * in one pipeline under the job's AbortSignal: cancel kills the clients' process groups and removes the
 * downloaded copy. What was written so far is tracked in ctx.written for the failure report.
 */
export function createRunRestore (options: RunRestoreOptions = {}): RunRestore {
  return async (job, ctx) => await runOne(job, ctx, options)
}

export const runRestore: RunRestore = createRunRestore()

async function runOne (job: RestoreJob, ctx: RestoreContext, options: RunRestoreOptions): Promise<RestoreResult> {
  ctx.signal.throwIfAborted()
  const log = ctx.log.child({ restoreId: job.jobId, backupId: job.backupId, type: job.backup.type })
  const type = job.backup.type
  if (job.backup.encrypted) throw new CloudPilotError('UNSUPPORTED', 'Restoring encrypted backups is not supported by this agent version.')
  if (type === 'snapshot') throw new CloudPilotError('UNSUPPORTED', 'Snapshots are restored with the provider\'s tools, not by the agent.')
  if (type === 'files' && job.targetPath === null) throw new CloudPilotError('VALIDATION_FAILED', 'A files restore needs a targetPath.')
  if (type === 'database' && job.database === null) throw new CloudPilotError('VALIDATION_FAILED', 'A database restore needs a target connection.')
  if (type === 'full' && job.database === null && job.targetPath === null) throw new CloudPilotError('VALIDATION_FAILED', 'Nothing to restore: neither databases nor files were asked for.')
  ctx.written.engine = job.backup.engine

  const registry = new ProcessRegistry()
  const sourceOptions: SourceOptions = { signal: ctx.signal, log, registry }
  if (options.path !== undefined) sourceOptions.path = options.path
  if (options.secretDir !== undefined) sourceOptions.secretDir = options.secretDir
  if (options.onSpawn !== undefined) sourceOptions.onSpawn = options.onSpawn

  const plan = planDatabases(job)
  let databases: DatabaseRestorer | null = null
  let archive: VerifiedArchive | null = null
  let meter: ProgressMeter | null = null
  try {
    if (plan.length > 0) {
      databases = await DatabaseRestorer.open(job, plan, ctx.written, sourceOptions)
      await databases.preflight()
    }
    if (job.targetPath !== null && type !== 'database') await checkTargetPath(job.targetPath, job.replaceExisting)

    archive = await openVerifiedArchive(job, ctx)
    log.info({ archive: archive.kind, verifySeconds: archive.verifySeconds }, 'archive verified; restoring')
    const started = performance.now()
    const activeMeter = new ProgressMeter({
      onProgress: (p) => { ctx.onProgress(p) },
      phase: 'restoring',
      ...(options.progressIntervalMs === undefined ? {} : { intervalMs: options.progressIntervalMs }),
    })
    meter = activeMeter
    const counter = new HashCounter({ hash: false, onBytes: (n) => { activeMeter.add(n) } })
    const input = await archive.open()
    activeMeter.start()
    let files: FilesRestored | null = null
    if (type === 'database') {
      if (databases === null) throw new Error('no database target')
      await restoreDump(job, databases, plan, input, counter, ctx.signal)
    } else {
      files = await restoreTar(job, databases, plan, input, counter, ctx, log)
    }
    activeMeter.stop()
    archive.checkSecondPass()
    const restoreSeconds = (performance.now() - started) / 1000
    const bytes = counter.bytes
    ctx.onProgress({ bytes, bytesPerSecond: restoreSeconds > 0 ? Math.round(bytes / restoreSeconds) : bytes, phase: 'completed' })
    const result: RestoreResult = { databases: databases?.restored ?? [], files, archive: archive.kind, bytes, verifySeconds: archive.verifySeconds, restoreSeconds }
    log.info({ databases: result.databases, files: files === null ? null : { files: files.files, bytes: files.bytes }, restoreSeconds }, 'restore completed')
    return result
  } catch (err) {
    const failure = ctx.signal.aborted ? (ctx.signal.reason instanceof Error ? ctx.signal.reason : err) : asRestoreError(err)
    if (isAbortError(failure) || failure === ctx.signal.reason) log.info('restore aborted')
    else log.warn({ err: failure }, 'restore failed')
    throw failure
  } finally {
    meter?.stop()
    await registry.terminateAll()
    await archive?.dispose().catch(() => {})
    await databases?.dispose().catch(() => {})
  }
}

function decompressor (compression: Compression): Transform {
  switch (compression) {
    // A readable buffer of a few chunks lets decompression run ahead while the client parses.
    case 'gzip': return zlib.createGunzip({ chunkSize: CHUNK_SIZE, highWaterMark: 8 * CHUNK_SIZE } as zlib.ZlibOptions)
    case 'zstd': return zlib.createZstdDecompress({ chunkSize: CHUNK_SIZE, highWaterMark: 8 * CHUNK_SIZE } as zlib.ZstdOptions)
    case 'none': return new PassThrough()
  }
}

/** A `database` backup: one plain dump, or a multi-database script split into its databases. */
async function restoreDump (job: RestoreJob, databases: DatabaseRestorer, plan: DatabasePlan[], input: Readable, counter: HashCounter, signal: AbortSignal): Promise<void> {
  const all = job.backup.databases
  const engine = databases.engine
  await pipeline(input, counter, decompressor(job.backup.compression), async (source: AsyncIterable<Buffer>) => {
    if (all.length <= 1) {
      const only = plan[0]
      if (only === undefined) return
      const stream = await databases.begin(only)
      for await (const chunk of source) await stream.write(chunk)
      await stream.end()
      return
    }
    const layout = multiDatabaseLayout(engine, all)
    const wanted = new Map(plan.map((p) => [all.indexOf(p.source), p]))
    const preamble: Buffer[] = []
    let preambleBytes = 0
    let current: { segment: number, stream: DatabaseStream } | null = null
    try {
      for await (const { segment, chunk } of splitAtDelimiters(source, layout.delimiters)) {
        if (segment === layout.preambleSegment) {
          preambleBytes += chunk.length
          if (preambleBytes > MAX_PREAMBLE_BYTES) throw new CloudPilotError('RESTORE_FAILED', 'The dump\'s header is larger than a mysqldump header can be.')
          preamble.push(chunk)
          continue
        }
        if (current !== null && current.segment !== segment) {
          await current.stream.end()
          current = null
        }
        const index = layout.databaseAt(segment)
        const target = index === null ? undefined : wanted.get(index)
        if (target === undefined) continue
        if (current === null) {
          current = { segment, stream: await databases.begin(target) }
          for (const b of preamble) await current.stream.write(b)
        }
        await current.stream.write(chunk)
      }
      if (current !== null) await current.stream.end()
    } catch (err) {
      if (err instanceof SectionMissing) throw layoutError(engine, all, err)
      throw err
    }
  }, { signal })
  missingDatabases(plan, databases)
}

/** A `files` or `full` backup: tar entries to the target path, and (full) the dumps to their databases. */
async function restoreTar (job: RestoreJob, databases: DatabaseRestorer | null, plan: DatabasePlan[], input: Readable, counter: HashCounter, ctx: RestoreContext, log: RestoreContext['log']): Promise<FilesRestored | null> {
  const full = job.backup.type === 'full'
  const extract = tar.extract()
  // Errors of the feeding side are kept (never left unhandled) and reported after the loop, which sees them too.
  let feedError: unknown = null
  const feeding = pipeline(input, counter, decompressor(job.backup.compression), extract, { signal: ctx.signal }).catch((err: unknown) => { feedError = err })
  let extractor: FileExtractor | null = null
  let manifest: FullManifest | null = null
  let current: { dir: string, part: number, stream: DatabaseStream } | null = null
  const openExtractor = async (targetPath: string): Promise<FileExtractor> => {
    if (extractor === null) {
      ctx.written.path = targetPath
      extractor = await FileExtractor.open(targetPath, { log, signal: ctx.signal })
    }
    return extractor
  }
  try {
    for await (const entry of extract) {
      const name = entry.header.name
      if (full && isFullMetadata(name)) {
        if (name === FULL_MANIFEST) {
          manifest = parseManifest(await readAll(entry, MAX_MANIFEST_BYTES), job)
          continue
        }
        const part = parseDumpPart(name)
        if (part === null) { await drain(entry); continue }
        if (manifest === null) throw new CloudPilotError('RESTORE_FAILED', `The full archive has a dump part (${name}) before its manifest.`)
        const db = manifest.databases.find((d) => d.dir === part.dir)
        if (db === undefined) throw new CloudPilotError('RESTORE_FAILED', `The full archive has a dump part (${name}) of a database its manifest does not list.`)
        if (current !== null && current.dir !== part.dir) {
          await current.stream.end()
          current = null
        }
        const target = plan.find((p) => p.source === db.name)
        if (target === undefined || databases === null) { await drain(entry); continue }
        if (current === null) {
          if (part.part !== 1) throw new CloudPilotError('RESTORE_FAILED', `The dump of ${JSON.stringify(db.name)} in the archive does not start with its first part.`)
          current = { dir: part.dir, part: 0, stream: await databases.begin(target) }
        }
        if (part.part !== current.part + 1) throw new CloudPilotError('RESTORE_FAILED', `The parts of the dump of ${JSON.stringify(db.name)} are out of order in the archive (${name}).`)
        current.part = part.part
        for await (const chunk of entry) await current.stream.write(chunk as Buffer)
        continue
      }
      if (current !== null) {
        await current.stream.end()
        current = null
      }
      if (job.targetPath === null) { await drain(entry); continue }
      const files = await openExtractor(job.targetPath)
      await files.entry(entry.header, entry)
      if (entry.header.type !== 'file' && entry.header.type !== 'contiguous-file') await drain(entry)
    }
    if (current !== null) {
      await current.stream.end()
      current = null
    }
  } catch (err) {
    extract.destroy()
    await feeding
    throw err
  }
  await feeding
  if (feedError !== null) throw feedError
  if (full && manifest === null) throw new CloudPilotError('RESTORE_FAILED', 'The archive has no cloudpilot/manifest.json: it is not a full backup made by CloudPilot.')
  if (databases !== null) missingDatabases(plan, databases)
  if (job.targetPath === null) return null
  const files = await openExtractor(job.targetPath)
  return await files.finish()
}

function missingDatabases (plan: DatabasePlan[], databases: DatabaseRestorer): void {
  const done = new Set(databases.restored.map((r) => r.target))
  const missing = plan.filter((p) => !done.has(p.target))
  if (missing.length > 0) {
    throw new CloudPilotError('RESTORE_FAILED', `The archive holds no dump of ${missing.map((p) => JSON.stringify(p.source)).join(', ')}.`)
  }
}

function parseManifest (raw: Buffer, job: RestoreJob): FullManifest {
  let parsed: Partial<FullManifest>
  try {
    parsed = JSON.parse(raw.toString('utf8')) as Partial<FullManifest>
  } catch {
    throw new CloudPilotError('RESTORE_FAILED', 'The full archive\'s cloudpilot/manifest.json is not valid JSON.')
  }
  if (parsed.format !== FULL_MANIFEST_FORMAT || !Array.isArray(parsed.databases)) {
    throw new CloudPilotError('RESTORE_FAILED', `The full archive's manifest has an unknown format ${JSON.stringify(parsed.format)}.`, { hint: 'Upgrade the agent on the target server.' })
  }
  if (job.backup.engine !== null && parsed.engine !== job.backup.engine) {
    throw new CloudPilotError('RESTORE_FAILED', `The full archive holds ${String(parsed.engine)} dumps; the backup recorded ${job.backup.engine}.`)
  }
  return parsed as FullManifest
}

async function readAll (entry: Entry, max: number): Promise<Buffer> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of entry) {
    size += (chunk as Buffer).length
    if (size > max) throw new CloudPilotError('RESTORE_FAILED', `${entry.header.name} in the archive is larger than ${max} bytes.`)
    chunks.push(chunk as Buffer)
  }
  return Buffer.concat(chunks)
}

async function drain (entry: Entry): Promise<void> {
  for await (const chunk of entry) void chunk
}

/** Unknown failures of the restore pipeline become RESTORE_FAILED with their message. */
function asRestoreError (err: unknown): Error {
  if (err instanceof CloudPilotError || isAbortError(err)) return err as Error
  const message = err instanceof Error ? err.message : String(err)
  const code = (err as NodeJS.ErrnoException).code
  if (code === 'Z_DATA_ERROR' || code === 'Z_BUF_ERROR' || /incorrect header check|unexpected end of file/i.test(message)) {
    return new CloudPilotError('RESTORE_FAILED', `The archive could not be decompressed: ${message}`, { cause: err })
  }
  return new CloudPilotError('RESTORE_FAILED', `The restore failed: ${message}`, { cause: err })
}
