/**
 * Open-loop API load in a process of its own: requests are started on a fixed schedule (rate per second)
 * whether or not earlier ones finished, and each latency is measured from its scheduled start (so a stalled
 * server is not hidden by the client waiting). A mix of cheap authenticated GETs. Prints one JSON line at the end.
 *
 * The first `warmup` seconds run at the same rate and are not counted.
 *
 *   node bench/lib/api-load.ts <url> <token> <rate> <seconds> <serverIds.json> [warmup seconds]
 */
import http from 'node:http'
import { readFile } from 'node:fs/promises'

const [url, token, rateArg, secondsArg, idsFile, warmupArg] = process.argv.slice(2)
if (url === undefined || token === undefined || idsFile === undefined) throw new Error('usage: api-load.ts <url> <token> <rate> <seconds> <serverIds.json>')
const rate = Number(rateArg)
const seconds = Number(secondsArg)
const warmup = Number(warmupArg ?? 0)
const ids = JSON.parse(await readFile(idsFile, 'utf8')) as string[]
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 })
const target = new URL(url)

const paths = [
  () => '/api/v1/servers?limit=50',
  () => `/api/v1/servers/${ids[Math.floor(Math.random() * ids.length)] ?? ''}`,
  () => '/api/v1/plans',
  () => '/api/v1/backups?limit=20',
  () => '/api/v1/destinations',
]

interface Sample { path: number, ms: number, status: number, at: number }
const samples: Sample[] = []

function request (p: number, scheduled: number, counted: boolean): Promise<void> {
  return new Promise((resolve) => {
    const req = http.request({ host: target.hostname, port: target.port, path: (paths[p] as () => string)(), agent, headers: { authorization: `Bearer ${token}` } }, (res) => {
      res.resume()
      res.on('end', () => { if (counted) samples.push({ path: p, ms: performance.now() - scheduled, status: res.statusCode ?? 0, at: scheduled }); resolve() })
    })
    req.on('error', () => { if (counted) samples.push({ path: p, ms: performance.now() - scheduled, status: 0, at: scheduled }); resolve() })
    req.end()
  })
}

const skipped = Math.round(rate * warmup)
const total = Math.round(rate * seconds)
const interval = 1000 / rate
const t0 = performance.now()
const inflight: Array<Promise<void>> = []
let counting = 0
for (let i = 0; i < skipped + total; i++) {
  const scheduled = t0 + i * interval
  const wait = scheduled - performance.now()
  if (wait > 1) await new Promise((resolve) => setTimeout(resolve, wait))
  if (i === skipped) counting = performance.now()
  inflight.push(request(i % paths.length, scheduled, i >= skipped))
}
await Promise.all(inflight)
const elapsed = (performance.now() - (counting || t0)) / 1000
agent.destroy()
const names = ['GET /servers?limit=50', 'GET /servers/:id', 'GET /plans', 'GET /backups?limit=20', 'GET /destinations']
const p99 = (v: number[]): number => [...v].sort((a, b) => a - b)[Math.max(0, Math.ceil(0.99 * v.length) - 1)] ?? NaN
const perPath = Object.fromEntries(names.map((n, i) => [n, Math.round(p99(samples.filter((x) => x.path === i).map((x) => x.ms)) * 10) / 10]))
// The slowest requests with when they were due (seconds into the counted window): spread or clustered?
const slowest = [...samples].sort((a, b) => b.ms - a.ms).slice(0, 15).map((x) => ({ atSeconds: Math.round((x.at - (counting || t0)) / 10) / 100, ms: Math.round(x.ms), path: names[x.path] }))
// Requests over 50 ms per second of the counted window: periodic stalls show as regularly spaced seconds.
const over50BySecond: Record<string, number> = {}
for (const x of samples) {
  if (x.ms <= 50) continue
  const sec = String(Math.floor((x.at - (counting || t0)) / 1000))
  over50BySecond[sec] = (over50BySecond[sec] ?? 0) + 1
}
process.stdout.write(JSON.stringify({ sent: total, elapsed, over50BySecond, latenciesMs: samples.map((s) => Math.round(s.ms * 100) / 100), statuses: samples.map((s) => s.status), p99ByPathMs: perPath, slowest }) + '\n')
