import type { Readable } from 'node:stream'
import type { Logger } from 'pino'
import type { SpawnToolOptions } from './child-process.ts'

/** An opened source of archive bytes (a dump, a tar walk): read `readable`, then always `dispose()`. */
export interface ArchiveSource {
  /** The uncompressed archive bytes (SQL script or tar). Errors if the dump fails, even after bytes flowed. */
  readable: Readable
  /** Tools used and their versions, for the manifest (`{ pg_dump: '15.20' }`). */
  tools: Record<string, string>
  /** Removes secret files and kills anything still running; safe to call more than once. */
  dispose (): Promise<void>
}

export interface SourceOptions {
  signal: AbortSignal
  log?: Logger
  /** PATH the tools are looked up on (default: the agent's). */
  path?: string
  /** Directory for the private secret-file directory (default: os.tmpdir()). */
  secretDir?: string
  onSpawn?: SpawnToolOptions['onSpawn']
  registry?: SpawnToolOptions['registry']
  /** Run dump tools under `stdbuf -o 1M` when coreutils' stdbuf is on PATH (default true). */
  stdbuf?: boolean
}
