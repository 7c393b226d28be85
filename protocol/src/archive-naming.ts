import type { BackupType, Compression } from './vocabulary.ts'

/** File extension of an archive: `.sql.gz` for database dumps, `.tar.gz` for files and full, `.age` when encrypted. */
export function archiveExtension (type: BackupType, compression: Compression, encrypted: boolean): string {
  const base = type === 'database' ? '.sql' : type === 'snapshot' ? '.json' : '.tar'
  const comp = type === 'snapshot' ? '' : compression === 'gzip' ? '.gz' : compression === 'zstd' ? '.zst' : ''
  return base + comp + (encrypted ? '.age' : '')
}

/** Content type to serve a download with. */
export function archiveContentType (extension: string): string {
  if (extension.endsWith('.age')) return 'application/octet-stream'
  if (extension.endsWith('.gz')) return 'application/gzip'
  if (extension.endsWith('.zst')) return 'application/zstd'
  if (extension.endsWith('.tar')) return 'application/x-tar'
  if (extension.endsWith('.sql')) return 'application/sql'
  if (extension.endsWith('.json')) return 'application/json'
  return 'application/octet-stream'
}

/**
 * Object key of a backup: `<prefix>/<serverId>/<planId>/<yyyy>/<mm>/<dd>/<compact time>-<backupId><ext>`.
 * Keys carry ids only (never database names or paths), so nothing user-typed ends up in a key.
 */
export function backupObjectKey (input: { serverId: string, planId: string, backupId: string, createdAt: Date, extension: string }): string {
  const d = input.createdAt
  const yyyy = String(d.getUTCFullYear())
  const mm = String(d.getUTCMonth() + 1).padStart(2, '0')
  const dd = String(d.getUTCDate()).padStart(2, '0')
  const compact = d.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')
  return `${input.serverId}/${input.planId}/${yyyy}/${mm}/${dd}/${compact}-${input.backupId}${input.extension}`
}

/** Manifest object beside an archive. */
export function manifestKey (objectKey: string): string {
  return `${objectKey}.manifest.json`
}
