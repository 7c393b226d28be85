/** The results as one markdown table (printed, and pasted into the README's Performance section). */
import type { ScenarioResult } from './result.ts'
import type { Stats } from './stats.ts'

function secs (s: Stats): string {
  return `${s.median.toFixed(2)} s (${s.min.toFixed(2)}–${s.max.toFixed(2)})`
}

function metText (r: ScenarioResult): string {
  if (r.met === null) return 'passes at this size (target not tested)'
  return r.met ? 'met' : `**missed**: ${r.missed.join('; ')}`
}

export function markdownTable (results: ScenarioResult[]): string {
  const rows: string[][] = [['Scenario', 'Ours: median (min–max)', 'Baseline: median (min–max)', 'Ratio of medians (paired; best)', 'Peak RSS MB', 'CPU s', 'Target', 'Result']]
  for (const r of results) {
    const rss = r.peakRssMb === null ? '–' : r.peakRssMb.toFixed(0)
    const cpu = r.cpuSeconds === null ? '–' : r.cpuSeconds.toFixed(1)
    if (r.comparisons.length === 0) {
      rows.push([r.label, r.summary, '–', '–', rss, cpu, r.target, metText(r)])
      continue
    }
    r.comparisons.forEach((c, i) => {
      rows.push([
        i === 0 ? r.label : `${r.label} (reference)`,
        r.seconds === null ? '–' : secs(r.seconds),
        `${c.baseline}: ${secs(c.baselineSeconds)}`,
        `${c.ratio.toFixed(2)}x (${c.pairedRatio.toFixed(2)}x; ${c.minRatio.toFixed(2)}x)`,
        i === 0 ? rss : '',
        i === 0 ? `${cpu} vs ${c.baselineCpuSeconds.toFixed(1)}` : `vs ${c.baselineCpuSeconds.toFixed(1)}`,
        i === 0 ? r.target : 'information',
        i === 0 ? metText(r) : '',
      ])
    })
  }
  const esc = (cell: string): string => cell.replaceAll('|', '\\|')
  const lines = rows.map((row) => `| ${row.map(esc).join(' | ')} |`)
  lines.splice(1, 0, `|${rows[0]?.map(() => '---').join('|')}|`)
  return lines.join('\n')
}
