import type { DatabaseEngine } from '@cloudpilot/protocol'

/**
 * Layout of a `full` backup: one tar with the site's files (paths without their leading `/`, as in a files
 * backup) and, under `cloudpilot/`, a manifest and the dumps of its databases:
 *
 *   cloudpilot/manifest.json                      what is inside (format cloudpilot-full-backup/1)
 *   cloudpilot/RESTORE.txt                        the commands to restore it by hand
 *   cloudpilot/databases/<dir>/part-000001.sql    the plain dump of one database, cut into parts of at most
 *   cloudpilot/databases/<dir>/part-000002.sql    DUMP_PART_BYTES (concatenated in order they are the dump)
 *   var/www/site/...                              the files
 *
 * Why parts: a tar header carries the entry's size before its bytes, and a dump's size is known only at its end.
 * Instead of staging each dump in a temporary file (disk as large as the biggest dump, NO_SPACE failures, one
 * more copy of the data), the dump is cut into parts held in memory one at a time: no temporary disk, memory
 * bounded by one part, and `tar -xzOf x.tar.gz --wildcards 'cloudpilot/databases/shop/*' | psql shop` streams
 * the dump back out of the archive in order.
 */

export const FULL_DIR = 'cloudpilot'
export const FULL_MANIFEST = 'cloudpilot/manifest.json'
export const FULL_README = 'cloudpilot/RESTORE.txt'
export const FULL_DATABASES_DIR = 'cloudpilot/databases'
export const FULL_MANIFEST_FORMAT = 'cloudpilot-full-backup/1'

/** Largest part of a dump inside a full archive: the memory one database dump costs while it is archived. */
export const DUMP_PART_BYTES = 4 * 1024 * 1024

const PLAIN_DIR = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$/
const PART = /^cloudpilot\/databases\/([^/]+)\/part-(\d{6,})\.sql$/

export interface FullManifestDatabase {
  /** The database's name. */
  name: string
  /** Its folder under cloudpilot/databases/ (the name itself when it is a plain file name, else db-<n>). */
  dir: string
}

/** cloudpilot/manifest.json of a full archive. */
export interface FullManifest {
  format: typeof FULL_MANIFEST_FORMAT
  backupId: string
  createdAt: string
  engine: DatabaseEngine
  databases: FullManifestDatabase[]
  /** Absolute source paths; in the archive without their leading `/`. */
  paths: string[]
  exclude: string[]
  /** How each dump was made (restore with psql / mysql into an empty database). */
  dumpFormat: 'pg_dump plain' | 'mysqldump single database'
  partBytes: number
  agentVersion: string
}

/** Folder names for the databases: the name when it is safe as one path component, else `db-<n>`; unique. */
export function databaseDirs (names: readonly string[]): FullManifestDatabase[] {
  const used = new Set<string>()
  return names.map((name, i) => {
    let dir = PLAIN_DIR.test(name) && name !== '.' && name !== '..' && !used.has(name) ? name : `db-${i + 1}`
    while (used.has(dir)) dir = `${dir}_`
    used.add(dir)
    return { name, dir }
  })
}

export function dumpPartName (dir: string, part: number): string {
  return `${FULL_DATABASES_DIR}/${dir}/part-${String(part).padStart(6, '0')}.sql`
}

/** The folder and part number of a dump part entry, or null when the name is not one. */
export function parseDumpPart (name: string): { dir: string, part: number } | null {
  const m = PART.exec(name)
  if (m === null) return null
  return { dir: m[1] as string, part: Number(m[2]) }
}

/** Is this entry inside the archive's own `cloudpilot/` folder (never written to a files target)? */
export function isFullMetadata (name: string): boolean {
  const clean = name.replace(/^(?:\.\/)+/, '')
  return clean === FULL_DIR || clean === `${FULL_DIR}/` || clean.startsWith(`${FULL_DIR}/`)
}

/** Source paths that would collide with the archive's own folder (`/cloudpilot` and below). */
export function collidingPaths (paths: readonly string[]): string[] {
  return paths.filter((p) => {
    const clean = p.replace(/\/+$/, '')
    return clean === `/${FULL_DIR}` || clean.startsWith(`/${FULL_DIR}/`)
  })
}

/** cloudpilot/RESTORE.txt: restoring a full archive by hand. */
export function restoreInstructions (manifest: FullManifest): string {
  const lines = [
    `CloudPilot Backup: full backup ${manifest.backupId} of ${manifest.createdAt}`,
    '',
    'Files (paths without their leading "/"):',
    '  tar -xzf <archive>.tar.gz -C /restore/here --exclude=cloudpilot',
    '',
    `Databases (${manifest.engine}), one folder each under cloudpilot/databases/; the parts, in order, are one plain dump:`,
  ]
  for (const db of manifest.databases) {
    const glob = `'${FULL_DATABASES_DIR}/${db.dir}/*'`
    if (manifest.engine === 'postgresql') {
      lines.push(`  ${JSON.stringify(db.name)}: createdb <name> && tar -xzOf <archive>.tar.gz --wildcards ${glob} | psql -v ON_ERROR_STOP=1 <name>`)
    } else {
      lines.push(`  ${JSON.stringify(db.name)}: mysql -e 'CREATE DATABASE <name>' && tar -xzOf <archive>.tar.gz --wildcards ${glob} | mysql <name>`)
    }
  }
  lines.push('', '(.tar.zst archives: replace -xzf/-xzOf with --zstd -xf/--zstd -xOf.)', '')
  return lines.join('\n')
}
