import { CloudPilotError, type DatabaseEngine } from '@cloudpilot/protocol'
import { databaseSection, multiDatabaseHeader } from '../sources/postgres-dump.ts'

/** A piece of a split stream: `segment` 0 is what comes before the first delimiter, n what follows the n-th. */
export interface Segment {
  segment: number
  chunk: Buffer
}

/**
 * Splits a byte stream at delimiters that must appear, exactly and in this order. Only the expected next
 * delimiter is looked for, so text that merely looks like a later one is data. Memory: one chunk plus the
 * longest delimiter. Throws when the stream ends before every delimiter was seen.
 */
export async function * splitAtDelimiters (source: AsyncIterable<Buffer> | Iterable<Buffer>, delimiters: readonly Buffer[]): AsyncGenerator<Segment> {
  let next = 0
  let carry: Buffer = Buffer.alloc(0)
  for await (const chunk of source) {
    let data = carry.length === 0 ? chunk : Buffer.concat([carry, chunk])
    carry = Buffer.alloc(0)
    for (;;) {
      const delimiter = delimiters[next]
      if (delimiter === undefined) {
        if (data.length > 0) yield { segment: next, chunk: data }
        break
      }
      const at = data.indexOf(delimiter)
      if (at >= 0) {
        if (at > 0) yield { segment: next, chunk: data.subarray(0, at) }
        data = data.subarray(at + delimiter.length)
        next++
        continue
      }
      // Keep what could be the start of the delimiter for the next chunk.
      const keep = Math.min(delimiter.length - 1, data.length)
      if (data.length > keep) yield { segment: next, chunk: data.subarray(0, data.length - keep) }
      carry = Buffer.from(data.subarray(data.length - keep))
      break
    }
  }
  if (carry.length > 0) yield { segment: next, chunk: carry }
  if (next < delimiters.length) throw new SectionMissing(next)
}

export class SectionMissing extends Error {
  readonly index: number
  constructor (index: number) {
    super(`delimiter ${index} not found`)
    this.name = 'SectionMissing'
    this.index = index
  }
}

/**
 * How a multi-database dump made by the agent is cut into its databases:
 *
 * - PostgreSQL (postgres-dump.ts): the header, then per database `-- cloudpilot:database "<name>"`, its
 *   CREATE DATABASE and `\connect`, then its pg_dump output. Segment 2+i is the dump of database i.
 * - MySQL (`mysqldump --databases a b`): a header of session settings, then per database
 *   `-- Current Database: `a``, CREATE DATABASE, `USE `a`;`, then its tables. Segment 2+2i is database i;
 *   segment 0 (the header) is replayed before each restored database.
 */
export interface DumpLayout {
  delimiters: Buffer[]
  /** Index of the database whose dump a segment holds, or null for the segments around them. */
  databaseAt (segment: number): number | null
  /** Segment to replay before each database (MySQL's session settings), or null. */
  preambleSegment: number | null
}

export function multiDatabaseLayout (engine: DatabaseEngine, databases: readonly string[]): DumpLayout {
  if (engine === 'postgresql') {
    return {
      delimiters: [Buffer.from(multiDatabaseHeader(databases)), ...databases.map((d) => Buffer.from(databaseSection(d)))],
      databaseAt: (segment) => segment >= 2 ? segment - 2 : null,
      preambleSegment: null,
    }
  }
  const ident = (d: string): string => '`' + d.replace(/`/g, '``') + '`'
  return {
    delimiters: databases.flatMap((d) => [Buffer.from(`\n--\n-- Current Database: ${ident(d)}\n--\n`), Buffer.from(`\nUSE ${ident(d)};\n`)]),
    databaseAt: (segment) => segment >= 2 && segment % 2 === 0 ? (segment - 2) / 2 : null,
    preambleSegment: 0,
  }
}

/** The error for a dump whose layout is not the expected one. */
export function layoutError (engine: DatabaseEngine, databases: readonly string[], err: SectionMissing): CloudPilotError {
  const which = engine === 'postgresql' ? (err.index === 0 ? 'its header' : `the section of database ${JSON.stringify(databases[err.index - 1])}`) : `the section of database ${JSON.stringify(databases[Math.floor(err.index / 2)])}`
  return new CloudPilotError('RESTORE_FAILED', `The dump does not have the layout of a CloudPilot multi-database ${engine} backup: ${which} was not found where expected.`, { hint: 'Restore the archive by hand (README: "What a backup is, and restoring it by hand").' })
}
