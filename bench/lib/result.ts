import type { Stats } from './stats.ts'

/** One measured thing compared with one baseline (one table row). */
export interface Comparison {
  baseline: string
  baselineSeconds: Stats
  /** ours median / baseline median (what the target is judged on). */
  ratio: number
  /** Median over the rounds of ours_i / baseline_i, each pair run back to back: less sensitive to slow phases of the machine. */
  pairedRatio: number
  /** ours min / baseline min: the two at their best. */
  minRatio: number
  baselinePeakRssMb: number
  baselineCpuSeconds: number
  baselineOutputBytes?: number
}

/** What a scenario reports (bench/results.json holds one per scenario that ran). */
export interface ScenarioResult {
  id: string
  label: string
  /** What "ours" is, e.g. `agent backup to S3 emulator (run request -> completed)`. */
  measured: string
  /** Wall seconds of ours, per repetition (timed scenarios). */
  seconds: Stats | null
  comparisons: Comparison[]
  /** Peak RSS of the measured process (agent or coordinator), MB, largest over the repetitions. */
  peakRssMb: number | null
  /** CPU seconds (user+sys) of the measured process, median over repetitions; what it includes is in `notes`. */
  cpuSeconds: number | null
  /** The DESIGN §9 target in words, and whether this run met it (null: not applicable / not measured). */
  target: string
  met: boolean | null
  /** The parts of the target this run missed, each with its number (e.g. `agent peak RSS 187 MB > 80`). */
  missed: string[]
  /** One short line for the table (scenarios without a baseline). */
  summary: string
  /** The numbers the target is judged on, in words. */
  verdict: string
  notes: string[]
  extra: Record<string, unknown>
}
