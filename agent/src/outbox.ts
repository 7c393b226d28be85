import { mkdir, open, readFile, rename, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { newFrameId, type JobStatusFrame } from '@cloudpilot/protocol'

export type OutboxFrame = JobStatusFrame

interface Entry {
  frame: OutboxFrame
  sentAt: number | null
}

/**
 * Durable delivery of status changes. Every job.status frame is appended (and fsynced) to
 * `<stateDir>/outbox.jsonl` before it is sent, and stays there until the coordinator acknowledges it, so a
 * coordinator restart, a network cut or an agent crash loses no status change. Acked entries are compacted away.
 */
export class Outbox {
  readonly #file: string
  readonly #entries = new Map<string, Entry>()
  #acked = 0

  constructor (stateDir: string) {
    this.#file = path.join(stateDir, 'outbox.jsonl')
  }

  get file (): string {
    return this.#file
  }

  /** Loads entries left by a previous run (unacked status changes are sent again). */
  async load (): Promise<void> {
    await mkdir(path.dirname(this.#file), { recursive: true, mode: 0o700 })
    let raw = ''
    try {
      raw = await readFile(this.#file, 'utf8')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    }
    for (const line of raw.split('\n')) {
      if (line.trim() === '') continue
      try {
        const record = JSON.parse(line) as { op: 'add', frame: OutboxFrame } | { op: 'ack', id: string }
        if (record.op === 'add') this.#entries.set(record.frame.id, { frame: record.frame, sentAt: null })
        else this.#entries.delete(record.id)
      } catch {
        // A torn last line (crash mid-append) is skipped; everything before it is intact.
      }
    }
    await this.#compact()
  }

  /** Persists a status change; returns the frame to send. */
  async add (frame: Omit<OutboxFrame, 'id'>): Promise<OutboxFrame> {
    const full = { ...frame, id: newFrameId() } as OutboxFrame
    await this.#append({ op: 'add', frame: full })
    this.#entries.set(full.id, { frame: full, sentAt: null })
    return full
  }

  async ack (id: string): Promise<boolean> {
    if (!this.#entries.delete(id)) return false
    await this.#append({ op: 'ack', id })
    if (++this.#acked >= 200 || this.#entries.size === 0) await this.#compact()
    return true
  }

  /** Frames to (re)send: never sent on this connection, or sent more than `resendAfterMs` ago without an ack. */
  due (resendAfterMs: number, now = Date.now()): OutboxFrame[] {
    const out: OutboxFrame[] = []
    for (const entry of this.#entries.values()) {
      if (entry.sentAt === null || now - entry.sentAt >= resendAfterMs) out.push(entry.frame)
    }
    return out
  }

  markSent (id: string, now = Date.now()): void {
    const e = this.#entries.get(id)
    if (e !== undefined) e.sentAt = now
  }

  /** After a reconnect everything unacked is due again. */
  resetSent (): void {
    for (const e of this.#entries.values()) e.sentAt = null
  }

  get size (): number {
    return this.#entries.size
  }

  /** Job ids with a status change not yet acknowledged. */
  jobIds (): Set<string> {
    return new Set([...this.#entries.values()].map((e) => e.frame.jobId))
  }

  async #append (record: unknown): Promise<void> {
    const handle = await open(this.#file, 'a', 0o600)
    try {
      await handle.appendFile(JSON.stringify(record) + '\n')
      await handle.sync()
    } finally {
      await handle.close()
    }
  }

  async #compact (): Promise<void> {
    const tmp = `${this.#file}.tmp`
    const body = [...this.#entries.values()].map((e) => JSON.stringify({ op: 'add', frame: e.frame }) + '\n').join('')
    await writeFile(tmp, body, { mode: 0o600 })
    const handle = await open(tmp, 'r')
    try { await handle.sync() } finally { await handle.close() }
    await rename(tmp, this.#file)
    this.#acked = 0
  }
}
