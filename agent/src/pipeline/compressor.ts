import { availableParallelism } from 'node:os'
import { Duplex, PassThrough } from 'node:stream'
import zlib from 'node:zlib'
import { CloudPilotError, type Compression } from '@cloudpilot/protocol'
import { spawnTool, toolEnvironment, type SpawnToolOptions, type ToolProcess } from '../sources/child-process.ts'
import { lastStderrLine, mapSpawnError } from '../sources/error-mapping.ts'

/** zlib output chunk size: larger chunks mean fewer callbacks per MB. */
const CHUNK_SIZE = 128 * 1024
/** Bytes queued for a child's stdin before the writer waits for it to drain. */
const STDIN_QUEUE_BYTES = 1024 * 1024
/** gzip level of both pigz and node:zlib (the gzip/pigz default). */
export const GZIP_LEVEL = 6
/** zstd level (the zstd CLI default). */
export const ZSTD_LEVEL = 3

export interface CompressorOptions {
  /** Absolute path of pigz, or null to compress with node:zlib. */
  pigzPath?: string | null
  /** Threads for pigz. Default: the machine's available parallelism. */
  cores?: number
  signal?: AbortSignal
  onSpawn?: SpawnToolOptions['onSpawn']
  registry?: SpawnToolOptions['registry']
}

export interface Compressor {
  stream: Duplex
  /** What compresses, for the log and the manifest (`pigz`, `zlib`, `zstd`, `none`). */
  implementation: 'pigz' | 'zlib' | 'zstd' | 'none'
}

/**
 * The compression stage. gzip runs in `pigz -p <cores>` when the server has pigz (parallel, and the output is
 * a standard .gz), else in node:zlib (off the main thread, one core); zstd runs in node:zlib (Node >= 23.8);
 * `none` passes bytes through.
 */
export function createCompressor (compression: Compression, options: CompressorOptions = {}): Compressor {
  switch (compression) {
    case 'gzip':
      if (options.pigzPath !== undefined && options.pigzPath !== null) {
        return { stream: pigzStream(options.pigzPath, options), implementation: 'pigz' }
      }
      return { stream: zlib.createGzip({ level: GZIP_LEVEL, chunkSize: CHUNK_SIZE }), implementation: 'zlib' }
    case 'zstd':
      return {
        stream: zlib.createZstdCompress({ chunkSize: CHUNK_SIZE, params: { [zlib.constants.ZSTD_c_compressionLevel]: ZSTD_LEVEL, [zlib.constants.ZSTD_c_checksumFlag]: 1 } }),
        implementation: 'zstd',
      }
    case 'none':
      return { stream: new PassThrough(), implementation: 'none' }
  }
}

/** `pigz -c -p N` as a transform: bytes written go to its stdin, its stdout is read; a non-zero exit is an error. */
function pigzStream (file: string, options: CompressorOptions): Duplex {
  const cores = Math.max(1, options.cores ?? availableParallelism())
  const spawnOptions: SpawnToolOptions = { env: toolEnvironment({}), stdin: 'pipe' }
  if (options.signal !== undefined) spawnOptions.signal = options.signal
  if (options.onSpawn !== undefined) spawnOptions.onSpawn = options.onSpawn
  if (options.registry !== undefined) spawnOptions.registry = options.registry
  return new ChildProcessTransform(spawnTool(file, ['-c', `-${GZIP_LEVEL}`, '-p', String(cores)], spawnOptions), 'pigz')
}

/**
 * A child process as a Duplex: writes go to its stdin (a write completes when the pipe accepts it, so the
 * child's pace is the writer's pace), its stdout is the readable side (paused while the reader is full). The
 * readable side ends only after the child exited 0; any other exit destroys the stream with DUMP_FAILED.
 * (Hand-written rather than Duplex.from(async generator): the generator form buffers one chunk at a time, which
 * leaves pigz's threads waiting for input more often.)
 */
export class ChildProcessTransform extends Duplex {
  private readonly proc: ToolProcess
  private pendingWrite: ((err?: Error | null) => void) | null = null
  /** Input was dropped because the child closed its stdin: never a good archive, whatever the exit code. */
  private inputLost = false

  constructor (proc: ToolProcess, tool: string) {
    super({ readableHighWaterMark: 256 * 1024, writableHighWaterMark: 256 * 1024 })
    this.proc = proc
    const stdin = proc.stdin
    if (stdin === null) throw new Error(`${tool} stdin is not piped`)
    stdin.on('drain', () => { this.release(null) })
    stdin.on('error', (err) => {
      // EPIPE: the child went away with input still to take (a write failed); its exit status says why.
      this.inputLost = true
      this.release(null)
      if ((err as NodeJS.ErrnoException).code !== 'EPIPE') this.destroy(err)
    })
    proc.stdout.on('data', (chunk: Buffer) => {
      if (!this.push(chunk)) proc.stdout.pause()
    })
    proc.stdout.once('end', () => {
      void proc.exited.then((exit) => {
        if (this.destroyed) return
        if (exit.spawnError !== null) { this.destroy(mapSpawnError(exit.spawnError, tool, null)); return }
        if (exit.code !== 0 || exit.signal !== null || this.inputLost) {
          const how = exit.signal !== null ? `was killed by ${exit.signal}` : exit.code !== 0 ? `exited with code ${String(exit.code)}` : 'stopped reading its input'
          this.destroy(new CloudPilotError('DUMP_FAILED', `${tool} ${how}: ${lastStderrLine(proc.stderrTail())}`))
          return
        }
        this.push(null)
      })
    })
    proc.stdout.pause()
  }

  override _write (chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    const stdin = this.proc.stdin
    if (stdin === null || stdin.destroyed) { this.inputLost = true; callback(); return }
    stdin.write(chunk)
    // Keep up to STDIN_QUEUE_BYTES queued for the child rather than waiting for each write to be taken: a wait
    // per 64 KiB chunk left pigz's threads idle between chunks (the pipeline ran at 0.66 CPUs of 2).
    if (stdin.writableLength <= STDIN_QUEUE_BYTES) callback()
    else this.pendingWrite = callback
  }

  override _final (callback: (error?: Error | null) => void): void {
    this.proc.stdin?.end()
    callback()
  }

  override _read (): void {
    this.proc.stdout.resume()
  }

  override _destroy (error: Error | null, callback: (error?: Error | null) => void): void {
    this.release(null)
    if (this.proc.finished) { callback(error); return }
    this.proc.terminate().then(() => { callback(error) }, () => { callback(error) })
  }

  private release (err: Error | null): void {
    const cb = this.pendingWrite
    this.pendingWrite = null
    cb?.(err)
  }
}
