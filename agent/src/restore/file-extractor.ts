import { constants } from 'node:fs'
import { chmod, chown, lchown, link, lstat, lutimes, mkdir, open, readdir, realpath, symlink, unlink, utimes, type FileHandle } from 'node:fs/promises'
import path from 'node:path'
import type { Logger } from 'pino'
import type { Header } from 'tar-stream'

/** A tar entry's header as tar-stream reads it (fields may be null at runtime). */
export type EntryHeader = Partial<Header> & Pick<Header, 'name'>
import { CloudPilotError } from '@cloudpilot/protocol'
import { isAbortError } from '@cloudpilot/storage'
import { componentsKey, entryComponents, unsafeEntry } from './archive-path.ts'

/** What a files restore wrote. */
export interface FilesRestored {
  targetPath: string
  files: number
  directories: number
  symlinks: number
  hardlinks: number
  bytes: number
  /** Entries not restored (FIFOs, devices, sockets): named in the agent's log. */
  skipped: number
}

/**
 * Checks a files target before anything is written: it must be a directory (or not exist yet), and empty unless
 * replaceExisting. Throws TARGET_NOT_EMPTY or INSUFFICIENT_PRIVILEGES.
 */
export async function checkTargetPath (targetPath: string, replaceExisting: boolean): Promise<void> {
  let st
  try {
    st = await lstat(targetPath)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT') return
    throw fsError(err, targetPath)
  }
  if (st.isSymbolicLink()) st = await realpath(targetPath).then(async (real) => await lstat(real)).catch((err: unknown) => { throw fsError(err, targetPath) })
  if (!st.isDirectory()) throw new CloudPilotError('TARGET_NOT_EMPTY', `The target path ${targetPath} exists and is not a directory; nothing was written.`, { hint: 'Pick a directory (new or empty) as targetPath.' })
  if (replaceExisting) return
  const names = await readdir(targetPath).catch((err: unknown) => { throw fsError(err, targetPath) })
  if (names.length > 0) {
    throw new CloudPilotError('TARGET_NOT_EMPTY', `The target path ${targetPath} is not empty (${names.length} entries); nothing was written.`)
  }
}

interface PendingDirectory {
  absolute: string
  depth: number
  mode: number
  mtime: Date | null
  uid: number
  gid: number
}

/**
 * Writes tar entries under a target directory and never outside it:
 *
 * - names are checked by entryComponents (no absolute paths, no `..`);
 * - every directory on the way is checked with lstat: a symlink there (from the archive, or already in the
 *   target) refuses the entry, so a symlink followed by entries beneath it cannot redirect writes;
 * - files are created with O_EXCL | O_NOFOLLOW after removing what was at their path, so an existing symlink or
 *   hard link at the path is replaced, never written through;
 * - hard links may only point at regular files this restore wrote itself.
 *
 * Modes, mtimes and symlinks are restored; owners too when the agent runs as root (else the agent's user owns
 * the files and setuid/setgid bits are dropped). Directory modes and mtimes are applied at the end (writing
 * into a directory changes its mtime, and a read-only directory could not be filled). FIFOs and devices are
 * skipped with a warning.
 */
export class FileExtractor {
  readonly #root: string
  readonly #log: Logger
  readonly #asRoot: boolean
  readonly #directories = new Set<string>()
  readonly #files = new Set<string>()
  readonly #pending: PendingDirectory[] = []
  readonly #stats: FilesRestored
  readonly #signal: AbortSignal

  private constructor (root: string, log: Logger, signal: AbortSignal) {
    this.#root = root
    this.#log = log
    this.#signal = signal
    this.#asRoot = process.getuid?.() === 0
    this.#directories.add('')
    this.#stats = { targetPath: root, files: 0, directories: 0, symlinks: 0, hardlinks: 0, bytes: 0, skipped: 0 }
  }

  /** Creates the target directory when needed and resolves it (a target path that is a symlink is followed once, here). */
  static async open (targetPath: string, options: { log: Logger, signal: AbortSignal }): Promise<FileExtractor> {
    try {
      await mkdir(targetPath, { recursive: true, mode: 0o755 })
      return new FileExtractor(await realpath(targetPath), options.log, options.signal)
    } catch (err) {
      throw fsError(err, targetPath)
    }
  }

  get stats (): FilesRestored {
    return { ...this.#stats }
  }

  /** Writes one entry. The caller drains `body` afterwards when this did not read it (directories, links…). */
  async entry (header: EntryHeader, body: AsyncIterable<unknown>): Promise<void> {
    this.#signal.throwIfAborted()
    const name = header.name
    const components = entryComponents(name)
    if (components.length === 0) return // the archive's root (`./`): the target directory itself is left as it is
    const absolute = path.join(this.#root, ...components)
    switch (header.type) {
      case 'directory':
        await this.#ensureParents(name, components)
        await this.#directory(name, components, absolute, header)
        return
      case 'file':
      case 'contiguous-file':
        await this.#ensureParents(name, components)
        await this.#file(name, components, absolute, header, body)
        return
      case 'symlink':
        await this.#ensureParents(name, components)
        await this.#symlink(name, components, absolute, header)
        return
      case 'link':
        await this.#ensureParents(name, components)
        await this.#hardlink(name, components, absolute, header)
        return
      default:
        this.#stats.skipped++
        this.#log.warn({ entry: name, type: header.type }, 'archive entry of this type is not restored; skipped')
    }
  }

  /** Applies directory modes, owners and mtimes (deepest first). */
  async finish (): Promise<FilesRestored> {
    const dirs = [...this.#pending].sort((a, b) => b.depth - a.depth)
    for (const d of dirs) {
      try {
        if (this.#asRoot) await chown(d.absolute, d.uid, d.gid)
        await chmod(d.absolute, this.#mode(d.mode))
        if (d.mtime !== null) await utimes(d.absolute, d.mtime, d.mtime)
      } catch (err) {
        throw fsError(err, d.absolute)
      }
    }
    return this.stats
  }

  #mode (mode: number | undefined): number {
    // As root, everything (like `tar -p` as root); otherwise never setuid/setgid files owned by the agent's user.
    return (mode ?? 0o644) & (this.#asRoot ? 0o7777 : 0o1777)
  }

  /** Every directory above the entry exists as a real directory (created when missing), never a symlink. */
  async #ensureParents (name: string, components: string[]): Promise<void> {
    for (let i = 1; i < components.length; i++) {
      const key = componentsKey(components.slice(0, i))
      if (this.#directories.has(key)) continue
      const dir = path.join(this.#root, ...components.slice(0, i))
      let st
      try {
        st = await lstat(dir)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw fsError(err, dir)
        try {
          await mkdir(dir, { mode: 0o755 })
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw fsError(e, dir)
          i--
          continue // created meanwhile: look again
        }
        this.#directories.add(key)
        continue
      }
      if (st.isSymbolicLink()) throw unsafeEntry(name, `${key} is a symbolic link, and entries are never written through one`)
      if (!st.isDirectory()) {
        throw new CloudPilotError('RESTORE_FAILED', `Cannot restore ${JSON.stringify(name)}: ${dir} exists and is not a directory.`)
      }
      this.#directories.add(key)
    }
  }

  /** Removes what is at a path before a non-directory entry takes it; a directory there is a conflict. */
  async #clear (name: string, absolute: string): Promise<void> {
    let st
    try {
      st = await lstat(absolute)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
      throw fsError(err, absolute)
    }
    if (st.isDirectory()) throw new CloudPilotError('RESTORE_FAILED', `Cannot restore ${JSON.stringify(name)}: a directory is in its place at ${absolute}.`)
    await unlink(absolute).catch((err: unknown) => { throw fsError(err, absolute) })
  }

  async #directory (name: string, components: string[], absolute: string, header: EntryHeader): Promise<void> {
    const key = componentsKey(components)
    if (!this.#directories.has(key)) {
      let st = null
      try {
        st = await lstat(absolute)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw fsError(err, absolute)
      }
      if (st?.isSymbolicLink() === true) throw unsafeEntry(name, `${key} is a symbolic link, and a directory entry would make later entries go through it`)
      if (st !== null && !st.isDirectory()) await this.#clear(name, absolute)
      if (st === null || !st.isDirectory()) await mkdir(absolute, { mode: 0o700 }).catch((err: unknown) => { throw fsError(err, absolute) })
      this.#directories.add(key)
      this.#stats.directories++
    }
    this.#files.delete(key)
    this.#pending.push({ absolute, depth: components.length, mode: header.mode ?? 0o755, mtime: header.mtime ?? null, uid: header.uid ?? 0, gid: header.gid ?? 0 })
  }

  async #file (name: string, components: string[], absolute: string, header: EntryHeader, body: AsyncIterable<unknown>): Promise<void> {
    const key = componentsKey(components)
    let handle: FileHandle | null = null
    for (let attempt = 0; handle === null; attempt++) {
      try {
        handle = await open(absolute, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw fsError(err, absolute)
        await this.#clear(name, absolute)
      }
    }
    try {
      for await (const chunk of body) {
        this.#signal.throwIfAborted()
        await handle.write(chunk as Buffer)
      }
      if (this.#asRoot) await handle.chown(header.uid ?? 0, header.gid ?? 0)
      await handle.chmod(this.#mode(header.mode))
      if (header.mtime !== undefined) await handle.utimes(header.mtime, header.mtime)
      this.#stats.files++
      this.#stats.bytes += header.size ?? 0
    } catch (err) {
      throw fsError(err, absolute)
    } finally {
      await handle.close().catch(() => {})
    }
    this.#files.add(key)
  }

  async #symlink (name: string, components: string[], absolute: string, header: EntryHeader): Promise<void> {
    const key = componentsKey(components)
    if (this.#directories.has(key)) throw new CloudPilotError('RESTORE_FAILED', `Cannot restore the symlink ${JSON.stringify(name)}: a directory is in its place.`)
    await this.#clear(name, absolute)
    try {
      await symlink(header.linkname ?? '', absolute)
      if (this.#asRoot) await lchown(absolute, header.uid ?? 0, header.gid ?? 0)
      if (header.mtime !== undefined) await lutimes(absolute, header.mtime, header.mtime)
    } catch (err) {
      throw fsError(err, absolute)
    }
    this.#files.delete(key)
    this.#stats.symlinks++
  }

  async #hardlink (name: string, components: string[], absolute: string, header: EntryHeader): Promise<void> {
    const linkname = header.linkname ?? ''
    let targetKey: string
    try {
      targetKey = componentsKey(entryComponents(linkname))
    } catch {
      throw unsafeEntry(name, `it is a hard link to ${JSON.stringify(linkname)}, outside the archive`)
    }
    if (!this.#files.has(targetKey)) {
      throw unsafeEntry(name, `it is a hard link to ${JSON.stringify(linkname)}, which is not a file restored from this archive`)
    }
    const key = componentsKey(components)
    if (key === targetKey) return
    await this.#clear(name, absolute)
    try {
      await link(path.join(this.#root, targetKey), absolute)
    } catch (err) {
      throw fsError(err, absolute)
    }
    this.#files.add(key)
    this.#stats.hardlinks++
  }
}

/** Maps a file-system error of the restore to the registry, naming the path. */
export function fsError (err: unknown, p: string): Error {
  if (err instanceof CloudPilotError || isAbortError(err)) return err as Error
  const code = (err as NodeJS.ErrnoException).code
  if (code === 'ENOSPC' || code === 'EDQUOT') return new CloudPilotError('NO_SPACE', `No space left on the device while restoring ${p}.`, { cause: err, hint: 'Free disk space on the target server, or restore to another path.' })
  if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
    return new CloudPilotError('INSUFFICIENT_PRIVILEGES', `The agent may not write ${p}.`, { cause: err, hint: 'Give the cloudpilot user write access to the target path (or pick a targetPath it may write).' })
  }
  if (code === 'ELOOP') return unsafeEntry(p, 'a symbolic link is in its place')
  const message = err instanceof Error ? err.message : String(err)
  return new CloudPilotError('RESTORE_FAILED', `Restoring ${p} failed: ${message}`, { cause: err })
}
