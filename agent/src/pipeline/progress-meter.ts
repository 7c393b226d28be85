export interface Progress {
  bytes: number
  bytesPerSecond: number
  phase?: string
}

export interface ProgressMeterOptions {
  onProgress: (progress: Progress) => void
  /** Minimum time between reports. Default 500 ms. */
  intervalMs?: number
  phase?: string
}

/**
 * Reports bytes and rate at most every `intervalMs` while bytes flow: a timer (unref'd, so it never keeps the
 * agent alive) samples the counter and reports only when it moved. The rate is over the last interval.
 */
export class ProgressMeter {
  bytes = 0
  private readonly onProgress: (progress: Progress) => void
  private readonly intervalMs: number
  private timer: NodeJS.Timeout | null = null
  private lastBytes = 0
  private lastAt = 0
  private startedAt = 0
  phase: string | undefined

  constructor (options: ProgressMeterOptions) {
    this.onProgress = options.onProgress
    this.intervalMs = options.intervalMs ?? 500
    this.phase = options.phase
  }

  start (): void {
    if (this.timer !== null) return
    this.startedAt = this.lastAt = performance.now()
    this.timer = setInterval(() => { this.tick() }, this.intervalMs)
    this.timer.unref()
  }

  add (bytes: number): void {
    this.bytes += bytes
  }

  /** Average rate since start, in bytes per second. */
  averageRate (): number {
    const elapsed = performance.now() - this.startedAt
    return elapsed <= 0 ? 0 : Math.round(this.bytes * 1000 / elapsed)
  }

  stop (): void {
    if (this.timer !== null) clearInterval(this.timer)
    this.timer = null
  }

  private tick (): void {
    if (this.bytes === this.lastBytes) return
    const now = performance.now()
    const elapsed = now - this.lastAt
    const bytesPerSecond = elapsed <= 0 ? 0 : Math.round((this.bytes - this.lastBytes) * 1000 / elapsed)
    this.lastBytes = this.bytes
    this.lastAt = now
    const progress: Progress = { bytes: this.bytes, bytesPerSecond }
    if (this.phase !== undefined) progress.phase = this.phase
    try {
      this.onProgress(progress)
    } catch {
      // A failing reporter must not break the backup.
    }
  }
}
