import type { Readable } from 'node:stream'
import tar, { type Header, type Pack } from 'tar-stream'

type EntryHeader = Partial<Header> & Pick<Header, 'name'>
import { CloudPilotError, PRODUCT_VERSION, type FullSource } from '@cloudpilot/protocol'
import type { ArchiveSource, SourceOptions } from './archive-source.ts'
import { checkFilesSource, createFilesWalker, packReadable } from './files-archive.ts'
import {
  DUMP_PART_BYTES, FULL_MANIFEST, FULL_MANIFEST_FORMAT, FULL_README, collidingPaths, databaseDirs, dumpPartName,
  restoreInstructions, type FullManifest,
} from './full-layout.ts'
import { openMysqlDump } from './mysql-dump.ts'
import { openPostgresDump } from './postgres-dump.ts'

/**
 * `full` source: one tar stream with the manifest, the dump of every database (pg_dump / mariadb-dump, one
 * database at a time, each cut into parts of DUMP_PART_BYTES, see full-layout.ts) and then the files walk.
 * Nothing is staged on disk; memory holds at most one part. A failing dump (exit status, missing completion
 * marker) fails the stream after its bytes, so the pipeline fails and nothing is published.
 */
export async function openFullArchive (source: FullSource, options: SourceOptions & { backupId: string, createdAt: Date }): Promise<ArchiveSource> {
  const colliding = collidingPaths(source.paths)
  if (colliding.length > 0) {
    throw new CloudPilotError('VALIDATION_FAILED', `A full backup keeps its own data under cloudpilot/ in the archive, so it cannot include ${colliding.join(', ')}.`, { hint: 'Back up /cloudpilot with a separate files plan.' })
  }
  const files = { paths: source.paths, ...(source.exclude === undefined ? {} : { exclude: source.exclude }) }
  // Fail before any dump runs when a path is missing or unreadable.
  await checkFilesSource(files)
  const database = source.database
  const manifest: FullManifest = {
    format: FULL_MANIFEST_FORMAT,
    backupId: options.backupId,
    createdAt: options.createdAt.toISOString(),
    engine: database.engine,
    databases: databaseDirs(database.databases),
    paths: [...source.paths],
    exclude: [...(source.exclude ?? [])],
    dumpFormat: database.engine === 'postgresql' ? 'pg_dump plain' : 'mysqldump single database',
    partBytes: DUMP_PART_BYTES,
    agentVersion: PRODUCT_VERSION,
  }
  const pack = tar.pack()
  const walker = createFilesWalker(pack, files, options)
  const tools: Record<string, string> = {}
  const mtime = new Date(Math.floor(options.createdAt.getTime() / 1000) * 1000)
  const uid = process.getuid?.() ?? 0
  const gid = process.getgid?.() ?? 0
  let dump: ArchiveSource | null = null
  let stopped = false

  const walking = (async () => {
    const meta = { mode: 0o644, uid, gid, mtime, type: 'file' as const }
    await addEntry(pack, { ...meta, name: FULL_MANIFEST }, [Buffer.from(JSON.stringify(manifest, null, 2) + '\n')])
    await addEntry(pack, { ...meta, name: FULL_README }, [Buffer.from(restoreInstructions(manifest))])
    for (const db of manifest.databases) {
      if (stopped) throw new Error('archive stopped')
      const one = { ...database, databases: [db.name] }
      dump = database.engine === 'postgresql' ? await openPostgresDump(one, options) : await openMysqlDump(one, options)
      Object.assign(tools, dump.tools)
      try {
        await packDump(pack, dump.readable, db.dir, { ...meta, mode: 0o600 })
      } finally {
        await dump.dispose()
        dump = null
      }
    }
    await walker.walk()
    pack.finalize()
  })()

  const archive = packReadable(pack, walking, () => {
    stopped = true
    walker.stop()
    ;(dump as ArchiveSource | null)?.readable.destroy()
  })
  return { ...archive, tools }
}

/** Cuts one dump into part entries of at most DUMP_PART_BYTES each (at least one part, even for an empty dump). */
async function packDump (pack: Pack, dump: Readable, dir: string, header: Omit<EntryHeader, 'name'>): Promise<void> {
  let part = 0
  let buffers: Buffer[] = []
  let size = 0
  const flush = async (): Promise<void> => {
    part++
    const body = buffers
    buffers = []
    size = 0
    await addEntry(pack, { ...header, name: dumpPartName(dir, part) }, body)
  }
  for await (const chunk of dump) {
    let buf = chunk as Buffer
    while (buf.length > 0) {
      const take = Math.min(buf.length, DUMP_PART_BYTES - size)
      buffers.push(take === buf.length ? buf : buf.subarray(0, take))
      size += take
      buf = buf.subarray(take)
      if (size >= DUMP_PART_BYTES) await flush()
    }
  }
  if (size > 0 || part === 0) await flush()
}

/** Adds one entry whose body is already in memory; rejects when the pack is torn down meanwhile. */
async function addEntry (pack: Pack, header: EntryHeader, body: Buffer[]): Promise<void> {
  const size = body.reduce((n, b) => n + b.length, 0)
  await new Promise<void>((resolve, reject) => {
    const onClose = (): void => { reject(new Error('archive stopped')) }
    pack.once('close', onClose)
    const sink = pack.entry({ ...header, size }, (err) => {
      pack.off('close', onClose)
      if (err) reject(err)
      else resolve()
    })
    for (const b of body) sink.write(b)
    sink.end(null)
  })
}
