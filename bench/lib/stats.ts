/** Order statistics of repeated measurements. */
export interface Stats {
  median: number
  min: number
  max: number
  n: number
  values: number[]
}

export function stats (values: number[]): Stats {
  const sorted = [...values].sort((a, b) => a - b)
  const n = sorted.length
  const median = n === 0 ? NaN : n % 2 === 1 ? sorted[(n - 1) / 2] as number : ((sorted[n / 2 - 1] as number) + (sorted[n / 2] as number)) / 2
  return { median, min: sorted[0] ?? NaN, max: sorted[n - 1] ?? NaN, n, values }
}

/** Nearest-rank percentile (p in 0..100) of unsorted values. */
export function percentile (values: number[], p: number): number {
  if (values.length === 0) return NaN
  const sorted = [...values].sort((a, b) => a - b)
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)))
  return sorted[rank - 1] as number
}

export const MB = 1024 * 1024
