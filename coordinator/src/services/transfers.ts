import { randomUUID } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import { CloudPilotError, SECOND, type ErrorData } from '@cloudpilot/protocol'
import { hashToken, newToken, safeEqual } from '../crypto/tokens.ts'

interface Pending {
  serverId: string
  tokenHash: string
  resolve: (body: IncomingMessage) => void
  reject: (err: Error) => void
  timer: NodeJS.Timeout
}

/**
 * One-off authenticated transfers: when a download's bytes exist only on a server (a `local` destination or the
 * spool copy), the coordinator asks the agent to PUT them to /agent/transfers/:id with a single-use token and
 * relays the request body to the waiting download. Nothing is stored on the coordinator.
 */
export class Transfers {
  readonly #pending = new Map<string, Pending>()
  readonly #startTimeoutMs: number

  constructor (options: { startTimeoutMs?: number } = {}) {
    this.#startTimeoutMs = options.startTimeoutMs ?? 30 * SECOND
  }

  /** Registers a transfer; `send` must deliver the id and token to the agent. Resolves with the agent's body. */
  async request (serverId: string, send: (transferId: string, token: string) => boolean): Promise<IncomingMessage> {
    const transferId = randomUUID()
    const token = newToken('transfer')
    return await new Promise<IncomingMessage>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(transferId)
        reject(new CloudPilotError('AGENT_TIMEOUT', 'the agent did not start sending the file within 30 s'))
      }, this.#startTimeoutMs)
      timer.unref()
      this.#pending.set(transferId, { serverId, tokenHash: hashToken(token), resolve, reject, timer })
      if (!send(transferId, token)) {
        clearTimeout(timer)
        this.#pending.delete(transferId)
        reject(new CloudPilotError('AGENT_UNREACHABLE', 'the server\'s agent is not connected, so it cannot send the file'))
      }
    })
  }

  /** The agent's PUT arrived: check it is the right server and token (single use), hand the body over. */
  accept (transferId: string, serverId: string, token: string, body: IncomingMessage): boolean {
    const p = this.#pending.get(transferId)
    if (p === undefined || p.serverId !== serverId || !safeEqual(p.tokenHash, hashToken(token))) return false
    this.#pending.delete(transferId)
    clearTimeout(p.timer)
    p.resolve(body)
    return true
  }

  /** The agent reported that it cannot send the file. */
  fail (transferId: string, serverId: string, error: ErrorData): void {
    const p = this.#pending.get(transferId)
    if (p === undefined || p.serverId !== serverId) return
    this.#pending.delete(transferId)
    clearTimeout(p.timer)
    p.reject(CloudPilotError.fromData(error))
  }
}
