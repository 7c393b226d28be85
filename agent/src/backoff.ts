import { SECOND } from '@cloudpilot/protocol'

/** Reconnect delays: exponential from 1 s, capped at 60 s, with full jitter (so a fleet does not reconnect in step). */
export class Backoff {
  #attempt = 0
  readonly #baseMs: number
  readonly #capMs: number
  readonly #random: () => number

  constructor (options: { baseMs?: number, capMs?: number, random?: () => number } = {}) {
    this.#baseMs = options.baseMs ?? SECOND
    this.#capMs = options.capMs ?? 60 * SECOND
    this.#random = options.random ?? Math.random
  }

  next (): number {
    const ceiling = Math.min(this.#capMs, this.#baseMs * 2 ** this.#attempt)
    this.#attempt = Math.min(this.#attempt + 1, 30)
    return Math.round(this.#baseMs / 2 + this.#random() * (ceiling - this.#baseMs / 2))
  }

  reset (): void {
    this.#attempt = 0
  }
}
