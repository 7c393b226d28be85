/**
 * Reading a process's resources from /proc (Linux): resident memory (VmRSS, and the peak VmHWM, which can be
 * reset through clear_refs), CPU time (utime+stime of the process, cutime+cstime of its reaped children), bytes
 * it caused to be written to storage, and its live descendants.
 */
import { readFile, readdir, writeFile } from 'node:fs/promises'

const TICKS_PER_SECOND = 100

export interface ProcMemory {
  rssBytes: number
  peakBytes: number
}

export interface ProcCpu {
  /** utime + stime of the process itself, seconds. */
  self: number
  /** cutime + cstime: children it has waited for (pg_dump, pigz...), seconds. */
  children: number
}

function kib (status: string, field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)
  return m?.[1] === undefined ? 0 : Number(m[1]) * 1024
}

export async function memory (pid: number): Promise<ProcMemory | null> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => null)
  if (status === null) return null
  return { rssBytes: kib(status, 'VmRSS'), peakBytes: kib(status, 'VmHWM') }
}

/** Fields after the command name of /proc/<pid>/stat (the name may contain spaces and parentheses). */
async function statFields (pid: number | 'self'): Promise<string[] | null> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => null)
  if (stat === null) return null
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')
}

export async function cpu (pid: number | 'self'): Promise<ProcCpu | null> {
  const f = await statFields(pid)
  if (f === null) return null
  // After the name: state(3) ppid(4) ... utime(14) stime(15) cutime(16) cstime(17); f[0] is field 3.
  const n = (field: number): number => Number(f[field - 3] ?? 0) / TICKS_PER_SECOND
  return { self: n(14) + n(15), children: n(16) + n(17) }
}

export async function parentOf (pid: number): Promise<number | null> {
  const f = await statFields(pid)
  return f === null ? null : Number(f[1])
}

/** Bytes the process caused to be sent to the storage layer (write_bytes of /proc/<pid>/io). */
export async function writtenBytes (pid: number): Promise<number | null> {
  const io = await readFile(`/proc/${pid}/io`, 'utf8').catch(() => null)
  const m = io === null ? null : /^write_bytes:\s+(\d+)/m.exec(io)
  return m?.[1] === undefined ? null : Number(m[1])
}

/** Resets VmHWM to the current RSS (clear_refs 5); false when the kernel refuses it. */
export async function resetPeak (pid: number): Promise<boolean> {
  return await writeFile(`/proc/${pid}/clear_refs`, '5').then(() => true, () => false)
}

/** Live descendants of pid (children, their children...), from one scan of /proc. */
export async function descendants (pid: number): Promise<number[]> {
  const entries = await readdir('/proc').catch(() => [] as string[])
  const parents = new Map<number, number[]>()
  await Promise.all(entries.filter((e) => /^\d+$/.test(e)).map(async (e) => {
    const child = Number(e)
    const parent = await parentOf(child)
    if (parent === null) return
    const list = parents.get(parent)
    if (list === undefined) parents.set(parent, [child])
    else list.push(child)
  }))
  const out: number[] = []
  const queue = [pid]
  while (queue.length > 0) {
    const p = queue.shift() as number
    for (const c of parents.get(p) ?? []) { out.push(c); queue.push(c) }
  }
  return out
}
