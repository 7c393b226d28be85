import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import path from 'node:path'

export interface JournalEntry {
  jobId: string
  kind: string
  startedAt: string
  /** Where a partial spool file of this job would be (removed if the agent died mid-job). */
  spoolPrefix: string | null
  /** A restore's targets, to say what may be partially written if the agent dies mid-restore. */
  target?: string
}

const FINISHED_KEEP = 1000

/**
 * Which jobs this agent is running (one file each under <stateDir>/jobs) and which it finished recently.
 * A journal entry left at start-up means the agent was killed mid-job: that job is reported failed and its
 * partial files are removed. The finished list makes a re-sent job.run (after a coordinator restart) a no-op.
 */
export class JobJournal {
  readonly #dir: string
  readonly #finishedFile: string
  #finished: string[] = []

  constructor (stateDir: string) {
    this.#dir = path.join(stateDir, 'jobs')
    this.#finishedFile = path.join(stateDir, 'finished-jobs.json')
  }

  async load (): Promise<JournalEntry[]> {
    await mkdir(this.#dir, { recursive: true, mode: 0o700 })
    try {
      const parsed = JSON.parse(await readFile(this.#finishedFile, 'utf8')) as unknown
      if (Array.isArray(parsed)) this.#finished = parsed.filter((x): x is string => typeof x === 'string')
    } catch { /* none yet */ }
    const leftovers: JournalEntry[] = []
    for (const name of await readdir(this.#dir)) {
      if (!name.endsWith('.json')) continue
      try {
        leftovers.push(JSON.parse(await readFile(path.join(this.#dir, name), 'utf8')) as JournalEntry)
      } catch {
        await rm(path.join(this.#dir, name), { force: true })
      }
    }
    return leftovers
  }

  async begin (entry: JournalEntry): Promise<void> {
    await writeFile(path.join(this.#dir, `${entry.jobId}.json`), JSON.stringify(entry), { mode: 0o600 })
  }

  async end (jobId: string): Promise<void> {
    this.#finished.push(jobId)
    if (this.#finished.length > FINISHED_KEEP) this.#finished = this.#finished.slice(-FINISHED_KEEP)
    await writeFile(this.#finishedFile, JSON.stringify(this.#finished), { mode: 0o600 })
    await rm(path.join(this.#dir, `${jobId}.json`), { force: true })
  }

  hasFinished (jobId: string): boolean {
    return this.#finished.includes(jobId)
  }
}
