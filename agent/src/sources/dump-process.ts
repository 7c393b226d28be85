import type { DatabaseEngine } from '@cloudpilot/protocol'
import { CloudPilotError } from '@cloudpilot/protocol'
import { spawnTool, type SpawnToolOptions } from './child-process.ts'
import { mapDumpFailure, mapSpawnError, stderrHasError } from './error-mapping.ts'

/** Bytes of the end of a dump kept to check its completion marker. */
const TAIL_BYTES = 1024
/** stdio output buffer the dump tools get through stdbuf. */
const STDBUF_SIZE = '1M'

export interface DumpProcessOptions {
  engine: DatabaseEngine
  /** Tool name for messages (`pg_dump`, `mariadb-dump`). */
  tool: string
  file: string
  args: string[]
  /**
   * Absolute path of coreutils' stdbuf, or null. When set, the tool runs as `stdbuf -o 1M <tool> <args>` (stdbuf
   * execs the tool: same pid, same argv handling): mysqldump writes its output in 4 KiB stdio blocks, and reading
   * them one by one costs the agent more CPU than the compressor on a 2-core server; 1 MiB blocks cut the reads
   * tenfold.
   */
  stdbuf?: string | null
  env: NodeJS.ProcessEnv
  signal: AbortSignal
  onSpawn?: SpawnToolOptions['onSpawn']
  registry?: SpawnToolOptions['registry']
  /** Text the tool writes at the very end of a complete dump; its absence means a truncated dump. */
  completionMarker: string
  subject: string
  secrets: ReadonlyArray<string | undefined>
}

/**
 * Runs one dump tool and yields its stdout. The dump counts as good only when the tool exited 0, was not
 * killed, wrote no error to stderr, wrote something, and ended with its completion marker; otherwise the
 * iteration throws the mapped error after the bytes, so the pipeline fails and nothing is published.
 * Stopping the iteration early (cancel, downstream failure) kills the tool's process group.
 */
export async function * dumpProcessOutput (options: DumpProcessOptions): AsyncGenerator<Buffer> {
  const spawnOptions: SpawnToolOptions = { env: options.env, signal: options.signal }
  if (options.onSpawn !== undefined) spawnOptions.onSpawn = options.onSpawn
  if (options.registry !== undefined) spawnOptions.registry = options.registry
  const stdbuf = options.stdbuf ?? null
  if (stdbuf !== null) spawnOptions.label = options.file
  const proc = stdbuf === null
    ? spawnTool(options.file, options.args, spawnOptions)
    : spawnTool(stdbuf, ['-o', STDBUF_SIZE, '--', options.file, ...options.args], spawnOptions)
  let bytes = 0
  let tail: Buffer = Buffer.alloc(0)
  try {
    for await (const chunk of proc.stdout) {
      const buf = chunk as Buffer
      bytes += buf.length
      tail = buf.length >= TAIL_BYTES ? buf.subarray(buf.length - TAIL_BYTES) : Buffer.concat([tail, buf]).subarray(-TAIL_BYTES)
      yield buf
    }
    const exit = await proc.exited
    if (exit.spawnError !== null) throw mapSpawnError(exit.spawnError, options.tool, options.engine)
    options.signal.throwIfAborted()
    const stderr = proc.stderrTail()
    const failure = { engine: options.engine, tool: options.tool, stderr, code: exit.code, signal: exit.signal, secrets: options.secrets, subject: options.subject }
    if (exit.code !== 0 || exit.signal !== null || stderrHasError(stderr)) throw mapDumpFailure(failure)
    if (bytes === 0) throw new CloudPilotError('DUMP_FAILED', `${options.tool} wrote an empty dump of ${options.subject}.`)
    if (!tail.toString('utf8').includes(options.completionMarker)) {
      throw new CloudPilotError('DUMP_FAILED', `The dump of ${options.subject} by ${options.tool} is incomplete: it does not end with "${options.completionMarker}".`)
    }
  } finally {
    if (!proc.finished) await proc.terminate()
  }
}
