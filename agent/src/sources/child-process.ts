import { spawn, type ChildProcess } from 'node:child_process'
import type { Readable, Writable } from 'node:stream'
import { SECOND } from '@cloudpilot/protocol'

/** How much of a child's stderr is kept for error mapping (the tail: the last lines say what went wrong). */
export const STDERR_TAIL_BYTES = 64 * 1024

export interface ExitResult {
  /** Exit code, or null when the process was ended by a signal or never started. */
  code: number | null
  signal: NodeJS.Signals | null
  /** Set when the process could not be started (ENOENT, EACCES …). */
  spawnError: NodeJS.ErrnoException | null
}

export interface SpawnToolOptions {
  /** Full environment of the child (never inherited implicitly: the caller decides what a child sees). */
  env: NodeJS.ProcessEnv
  /** Aborting kills the child's whole process group. */
  signal?: AbortSignal
  /** 'pipe' when the caller feeds the child (pigz), else the child reads /dev/null. */
  stdin?: 'pipe' | 'ignore'
  cwd?: string
  /** Grace period between SIGTERM and SIGKILL when the group is killed. Default 2 s. */
  killGraceMs?: number
  /** Told about every started process (tests read /proc/<pid>; the runner may log it). */
  onSpawn?: (info: { pid: number, file: string }) => void
  /** The tool's own path when `file` is a wrapper that execs it (stdbuf): what onSpawn reports. */
  label?: string
  /** Registry of the job's processes: the runner terminates and awaits all of them before it returns. */
  registry?: ProcessRegistry
}

/**
 * A child process started from an argument array (never through a shell), as the leader of its own process
 * group, so that killing it also kills anything it started.
 */
export class ToolProcess {
  readonly file: string
  readonly child: ChildProcess
  readonly stdout: Readable
  readonly stdin: Writable | null
  /** Settles (never rejects) once the process has exited and its stdio is closed. */
  readonly exited: Promise<ExitResult>
  private stderrChunks: Buffer[] = []
  private stderrBytes = 0
  private result: ExitResult | null = null
  private readonly killGraceMs: number
  private abortListener: (() => void) | null = null
  private readonly signal: AbortSignal | undefined

  constructor (file: string, args: readonly string[], options: SpawnToolOptions) {
    this.file = file
    this.killGraceMs = options.killGraceMs ?? 2 * SECOND
    this.signal = options.signal
    this.child = spawn(file, args, {
      env: options.env,
      cwd: options.cwd ?? '/',
      detached: true,
      shell: false,
      windowsHide: true,
      stdio: [options.stdin ?? 'ignore', 'pipe', 'pipe'],
    })
    if (this.child.stdout === null || this.child.stderr === null) throw new Error('child stdio not piped')
    this.stdout = this.child.stdout
    this.stdin = this.child.stdin
    this.child.stderr.on('data', (chunk: Buffer) => { this.keepStderr(chunk) })
    this.exited = new Promise<ExitResult>((resolve) => {
      this.child.once('error', (err: NodeJS.ErrnoException) => {
        // 'error' without a pid means the process never started; 'close' may not follow.
        if (this.child.pid === undefined) {
          this.result = { code: null, signal: null, spawnError: err }
          this.stdout.destroy()
          resolve(this.result)
        }
      })
      this.child.once('close', (code, signal) => {
        this.result ??= { code, signal, spawnError: null }
        resolve(this.result)
      })
    })
    if (this.child.pid !== undefined) options.onSpawn?.({ pid: this.child.pid, file: options.label ?? file })
    options.registry?.add(this)
    if (options.signal !== undefined) {
      const onAbort = (): void => { void this.terminate() }
      if (options.signal.aborted) onAbort()
      else {
        options.signal.addEventListener('abort', onAbort, { once: true })
        this.abortListener = onAbort
      }
    }
    void this.exited.then(() => { this.removeAbortListener() })
  }

  get pid (): number | undefined {
    return this.child.pid
  }

  get finished (): boolean {
    return this.result !== null
  }

  /** The last STDERR_TAIL_BYTES of stderr as text. */
  stderrTail (): string {
    return Buffer.concat(this.stderrChunks).toString('utf8')
  }

  /** Sends a signal to the whole process group (no-op once exited). */
  killGroup (signal: NodeJS.Signals = 'SIGTERM'): void {
    if (this.result !== null || this.child.pid === undefined) return
    try {
      process.kill(-this.child.pid, signal)
    } catch {
      // ESRCH: the group is already gone.
    }
  }

  /** SIGTERM to the group, SIGKILL after the grace period; resolves when the leader has exited. */
  async terminate (): Promise<ExitResult> {
    if (this.result !== null) return this.result
    this.killGroup('SIGTERM')
    // Unread output must not keep the pipe (and so 'close') open.
    this.stdout.destroy()
    this.stdin?.destroy()
    const timer = setTimeout(() => { this.killGroup('SIGKILL') }, this.killGraceMs)
    timer.unref()
    try {
      return await this.exited
    } finally {
      clearTimeout(timer)
      // Anything the leader left behind in its group goes too.
      if (this.child.pid !== undefined) {
        try { process.kill(-this.child.pid, 'SIGKILL') } catch {}
      }
    }
  }

  private keepStderr (chunk: Buffer): void {
    this.stderrChunks.push(chunk)
    this.stderrBytes += chunk.length
    while (this.stderrBytes > STDERR_TAIL_BYTES && this.stderrChunks.length > 1) {
      const dropped = this.stderrChunks.shift()
      this.stderrBytes -= dropped?.length ?? 0
    }
    if (this.stderrBytes > STDERR_TAIL_BYTES) {
      const only = this.stderrChunks[0]
      if (only !== undefined) {
        const tail = only.subarray(only.length - STDERR_TAIL_BYTES)
        this.stderrChunks = [tail]
        this.stderrBytes = tail.length
      }
    }
  }

  private removeAbortListener (): void {
    if (this.abortListener !== null && this.signal !== undefined) {
      this.signal.removeEventListener('abort', this.abortListener)
      this.abortListener = null
    }
  }
}

/** The processes one job started; `terminateAll` kills every group still running and waits for the exits. */
export class ProcessRegistry {
  private readonly processes = new Set<ToolProcess>()

  add (proc: ToolProcess): void {
    this.processes.add(proc)
    void proc.exited.then(() => { this.processes.delete(proc) })
  }

  get size (): number {
    return this.processes.size
  }

  async terminateAll (): Promise<void> {
    await Promise.all([...this.processes].map(async (proc) => await proc.terminate()))
  }
}

export function spawnTool (file: string, args: readonly string[], options: SpawnToolOptions): ToolProcess {
  return new ToolProcess(file, args, options)
}

/**
 * The environment a dump tool sees: the agent's environment without anything that could carry or redirect
 * credentials (PG*, MYSQL_*), with messages in English (error mapping reads them) and the given PATH.
 */
export function toolEnvironment (extra: Record<string, string>, pathValue?: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [key, value] of Object.entries(process.env)) {
    if (value === undefined) continue
    if (/^(PG|MYSQL|MARIADB|LC_|LANG)/.test(key)) continue
    env[key] = value
  }
  env.LC_ALL = 'C'
  env.LANG = 'C'
  if (pathValue !== undefined) env.PATH = pathValue
  return { ...env, ...extra }
}
