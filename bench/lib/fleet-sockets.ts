/**
 * Simulated agents for the fleet scenario, in a process of their own: one WebSocket per agent credential,
 * speaking the real protocol (hello with the agent's fields, welcome, heartbeats at the interval the welcome
 * gives, pong to pings). Prints JSON lines: {"connected": n} while connecting, then {"ready": n}, then
 * {"stats": ...} every 5 s. Runs until SIGTERM.
 *
 *   node bench/lib/fleet-sockets.ts <coordinator url> <credentials.json> <from> <to>
 */
import { readFile } from 'node:fs/promises'
import WebSocket from 'ws'
import { PROTOCOL_VERSION, newFrameId } from '@cloudpilot/protocol'

const [url, file, fromArg, toArg] = process.argv.slice(2)
if (url === undefined || file === undefined) throw new Error('usage: fleet-sockets.ts <url> <credentials.json> <from> <to>')
const all = JSON.parse(await readFile(file, 'utf8')) as Array<{ serverId: string, credential: string }>
const creds = all.slice(Number(fromArg ?? 0), Number(toArg ?? all.length))
const wsUrl = url.replace(/^http/, 'ws') + '/agent/ws'
const CONCURRENT_CONNECTS = 100

let ready = 0
let closed = 0
let heartbeats = 0
let errors = 0
const sockets: WebSocket[] = []
const timers: NodeJS.Timeout[] = []

function print (o: unknown): void { process.stdout.write(JSON.stringify(o) + '\n') }

function connect (c: { serverId: string, credential: string }, i: number): Promise<void> {
  return new Promise((resolve) => {
    const ws = new WebSocket(wsUrl, { headers: { authorization: `Bearer ${c.credential}` }, perMessageDeflate: false, handshakeTimeout: 60_000 })
    sockets.push(ws)
    let welcomed = false
    ws.on('open', () => {
      ws.send(JSON.stringify({ type: 'hello', id: newFrameId(), protocolVersion: PROTOCOL_VERSION, agentVersion: '0.1.0', hostname: `sim-${i}`, os: 'Linux 6.1 (Debian 12)', arch: 'x64', tools: { pg_dump: '15.20', pigz: '2.6' }, runningJobs: [] }))
    })
    ws.on('message', (data: Buffer) => {
      const frame = JSON.parse(data.toString()) as { type: string, heartbeatIntervalMs?: number, id?: string }
      if (frame.type === 'welcome' && !welcomed) {
        welcomed = true
        ready++
        const every = frame.heartbeatIntervalMs ?? 15_000
        // Spread the heartbeats over the interval, as agents that started at different times do.
        const start = setTimeout(() => {
          const beat = (): void => {
            if (ws.readyState !== WebSocket.OPEN) return
            heartbeats++
            ws.send(JSON.stringify({ type: 'heartbeat', id: newFrameId(), load: [0.1, 0.2, 0.3], memory: { totalBytes: 4e9, freeBytes: 2e9, agentRssBytes: 5e7 }, spoolFreeBytes: 1e10, runningJobs: [] }))
          }
          beat()
          timers.push(setInterval(beat, every))
        }, Math.random() * every)
        timers.push(start)
        resolve()
      }
    })
    ws.on('error', () => { errors++; resolve() })
    ws.on('close', () => { closed++; resolve() })
  })
}

let next = 0
const progress = setInterval(() => print({ connected: ready, errors, closed }), 1000)
await Promise.all(Array.from({ length: CONCURRENT_CONNECTS }, async () => {
  for (;;) {
    const i = next++
    const c = creds[i]
    if (c === undefined) return
    await connect(c, i)
  }
}))
clearInterval(progress)
print({ ready, errors, closed })
setInterval(() => print({ stats: { open: sockets.filter((s) => s.readyState === WebSocket.OPEN).length, heartbeats, closed, errors } }), 5000)
process.once('SIGTERM', () => {
  for (const t of timers) clearTimeout(t)
  for (const s of sockets) s.terminate()
  process.exit(0)
})
