import { createReadStream, createWriteStream } from 'node:fs'
import { mkdir, open, opendir, rename, rm, stat, unlink } from 'node:fs/promises'
import { randomBytes } from 'node:crypto'
import path from 'node:path'
import { pipeline } from 'node:stream/promises'
import type { Readable } from 'node:stream'
import { CloudPilotError, type LocalConfig } from '@cloudpilot/protocol'
import type { CallOptions, GetOptions, ListOptions, ListPage, ObjectInfo, PutOptions, PutResult, StorageDriver, TestResult } from './driver.ts'
import { checkRange } from './byte-range.ts'
import { checkKey } from './key-path.ts'
import { asStorageError, throwIfAborted } from './node-error-map.ts'

const PART_SUFFIX = '.part-'

/**
 * `local`: a directory on the server (a second disk, an NFS mount). Objects are written to `<key>.part-<random>`,
 * fsynced and renamed into place, so a reader never sees a half-written file under its final name.
 */
export class LocalDriver implements StorageDriver {
  readonly type = 'local' as const
  readonly root: string

  constructor (config: LocalConfig) {
    if (!path.isAbsolute(config.path)) throw new CloudPilotError('VALIDATION_FAILED', 'local destination path must be absolute')
    this.root = path.resolve(config.path)
  }

  private pathOf (key: string): string {
    return path.join(this.root, checkKey(key))
  }

  private async requireRoot (): Promise<void> {
    try {
      const s = await stat(this.root)
      if (!s.isDirectory()) throw new CloudPilotError('CONTAINER_NOT_FOUND', `${this.root} is not a directory`, { hint: 'Create the directory on the server, or point the destination at a directory rather than a file.' })
    } catch (err) {
      if (err instanceof CloudPilotError) throw err
      const code = (err as NodeJS.ErrnoException).code
      // ENOTDIR: a component of the path is a regular file, so the directory cannot exist either.
      if (code === 'ENOENT' || code === 'ENOTDIR') throw new CloudPilotError('CONTAINER_NOT_FOUND', `directory ${this.root} does not exist`, { hint: 'Create the directory on the server (and give the cloudpilot user write access), or fix the path.' })
      if (code === 'EACCES' || code === 'EPERM') throw new CloudPilotError('AUTH_FAILED', `no access to ${this.root}`, { hint: 'Give the cloudpilot user write access to the directory.' })
      throw asStorageError(err, 'UPLOAD_FAILED', `local ${this.root}`)
    }
  }

  async put (key: string, body: Readable, options: PutOptions = {}): Promise<PutResult> {
    const finalPath = this.pathOf(key)
    await this.requireRoot()
    const partPath = finalPath + PART_SUFFIX + randomBytes(6).toString('hex')
    let sizeBytes = 0
    try {
      await mkdir(path.dirname(finalPath), { recursive: true })
      const out = createWriteStream(partPath, { flags: 'wx', mode: 0o600 })
      body.on('data', (chunk: Buffer) => { sizeBytes += chunk.length })
      await pipeline(body, out, options.signal === undefined ? {} : { signal: options.signal })
      const handle = await open(partPath, 'r')
      try { await handle.sync() } finally { await handle.close() }
      await rename(partPath, finalPath)
      return { key, sizeBytes }
    } catch (err) {
      await rm(partPath, { force: true }).catch(() => {})
      throw mapFsError(err, `writing ${key}`)
    }
  }

  async get (key: string, options: GetOptions = {}): Promise<Readable> {
    const p = this.pathOf(key)
    const range = options.range === undefined ? undefined : checkRange(options.range)
    throwIfAborted(options.signal)
    let handle
    try {
      handle = await open(p, 'r')
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENOENT' || code === 'ENOTDIR') await this.requireRoot()
      throw mapFsError(err, `reading ${key}`)
    }
    const s = await handle.stat().catch(async (err: unknown) => { await handle.close(); throw mapFsError(err, `reading ${key}`) })
    if (!s.isFile()) {
      await handle.close()
      throw new CloudPilotError('OBJECT_NOT_FOUND', `reading ${key}: no such object`)
    }
    const streamOptions: { start?: number, end?: number, signal?: AbortSignal } = {}
    if (range !== undefined) {
      streamOptions.start = range.start
      if (range.end !== undefined) streamOptions.end = range.end
    }
    if (options.signal !== undefined) streamOptions.signal = options.signal
    // 1 MiB reads: a restore reads the whole archive (twice when it is verified in place).
    return createReadStream('', { ...streamOptions, fd: handle, autoClose: true, highWaterMark: 1024 * 1024 })
  }

  async stat (key: string, options: CallOptions = {}): Promise<ObjectInfo | null> {
    const p = this.pathOf(key)
    throwIfAborted(options.signal)
    try {
      const s = await stat(p)
      if (!s.isFile()) return null
      return { key, sizeBytes: s.size, modifiedAt: s.mtime }
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENOENT' || code === 'ENOTDIR') {
        await this.requireRoot()
        return null
      }
      throw mapFsError(err, `stat ${key}`)
    }
  }

  async delete (key: string, options: CallOptions = {}): Promise<void> {
    const p = this.pathOf(key)
    throwIfAborted(options.signal)
    try {
      await unlink(p)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENOENT' || code === 'ENOTDIR') {
        // Deleting from a directory that is gone (an unmounted disk) must not look like success to retention.
        await this.requireRoot()
        return
      }
      throw mapFsError(err, `deleting ${key}`)
    }
  }

  async list (prefix: string, options: ListOptions = {}): Promise<ListPage> {
    throwIfAborted(options.signal)
    await this.requireRoot()
    const limit = Math.min(Math.max(options.limit ?? 1000, 1), 10000)
    const after = options.cursor ?? ''
    const keys: string[] = []
    await walk(this.root, '', async (rel) => {
      if (rel.startsWith(prefix) && rel > after && !isPartFile(rel)) keys.push(rel)
    }, options.signal)
    keys.sort()
    const page = keys.slice(0, limit)
    const items: ObjectInfo[] = []
    for (const key of page) {
      const s = await stat(path.join(this.root, key))
      items.push({ key, sizeBytes: s.size, modifiedAt: s.mtime })
    }
    return { items, nextCursor: keys.length > limit ? (page.at(-1) ?? null) : null }
  }

  async test (options: CallOptions = {}): Promise<TestResult> {
    const started = performance.now()
    await this.requireRoot()
    const key = `.cloudpilot-probe-${randomBytes(6).toString('hex')}`
    const payload = Buffer.from(`cloudpilot probe ${new Date().toISOString()}\n`)
    const { Readable } = await import('node:stream')
    await this.put(key, Readable.from([payload]), options)
    try {
      const chunks: Buffer[] = []
      for await (const chunk of await this.get(key, options)) chunks.push(chunk as Buffer)
      if (!Buffer.concat(chunks).equals(payload)) throw new CloudPilotError('UPLOAD_FAILED', 'probe object read back differs from what was written')
    } finally {
      await this.delete(key)
    }
    return { latencyMs: Math.round(performance.now() - started) }
  }

  async close (): Promise<void> {}
}

function isPartFile (rel: string): boolean {
  return /\.part-[0-9a-f]{12}$/.test(rel)
}

async function walk (root: string, rel: string, visit: (rel: string) => Promise<void>, signal?: AbortSignal): Promise<void> {
  let dir
  try {
    dir = await opendir(path.join(root, rel))
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
    throw err
  }
  for await (const entry of dir) {
    signal?.throwIfAborted()
    const child = rel === '' ? entry.name : `${rel}/${entry.name}`
    if (entry.isDirectory()) await walk(root, child, visit, signal)
    else if (entry.isFile()) await visit(child)
  }
}

function mapFsError (err: unknown, context: string): Error {
  if (err instanceof CloudPilotError) return err
  const code = (err as NodeJS.ErrnoException).code
  if (code === 'ENOENT') return new CloudPilotError('OBJECT_NOT_FOUND', `${context}: no such object`)
  if (code === 'ENOSPC' || code === 'EDQUOT') return new CloudPilotError('NO_SPACE', `${context}: no space left on the destination disk`, { cause: err })
  if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') return new CloudPilotError('AUTH_FAILED', `${context}: permission denied`, { cause: err, hint: 'Give the cloudpilot user write access to the directory.' })
  return asStorageError(err, 'UPLOAD_FAILED', context)
}
