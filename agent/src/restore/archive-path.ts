import { CloudPilotError } from '@cloudpilot/protocol'

/** An archive entry that would write outside the restore's target path (or cannot be written safely). */
export function unsafeEntry (name: string, why: string): CloudPilotError {
  return new CloudPilotError('UNSAFE_ARCHIVE_ENTRY', `The archive entry ${JSON.stringify(name.slice(0, 512))} was refused: ${why}. The restore stopped there; nothing was written outside the target path.`)
}

/**
 * The path components of a tar entry name (or of a hard link's target), relative to the target path. Refused
 * (UNSAFE_ARCHIVE_ENTRY): absolute names, any `..` component, NUL bytes. `./` prefixes, `.` components, repeated
 * and trailing slashes are normalised away (GNU tar writes `./x` with -C dir .). The archive's root itself (`.`,
 * `./`) gives an empty array. Pure: no file-system access; the extractor adds the checks that need one
 * (symlinks on the way, hard links to entries not restored).
 */
export function entryComponents (name: string): string[] {
  if (name.includes('\0')) throw unsafeEntry(name, 'its name contains a NUL byte')
  if (name.startsWith('/')) throw unsafeEntry(name, 'it is an absolute path')
  const parts: string[] = []
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue
    if (part === '..') throw unsafeEntry(name, 'it contains a ".." component')
    parts.push(part)
  }
  return parts
}

/** The key of a path (its components joined), as the extractor tracks what it wrote. */
export function componentsKey (components: readonly string[]): string {
  return components.join('/')
}
