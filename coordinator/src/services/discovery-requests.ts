import { CloudPilotError, SECOND, newFrameId, normaliseErrorData, type DatabaseConnection, type DiscoverResultFrame } from '@cloudpilot/protocol'
import type { AgentHub } from '../hub/agent-hub.ts'

interface Waiting {
  serverId: string
  resolve: (databases: Array<{ name: string, system: boolean }>) => void
  reject: (err: Error) => void
  timer: NodeJS.Timeout
}

/** Request/response over the agent socket for database discovery. */
export class DiscoveryRequests {
  readonly #waiting = new Map<string, Waiting>()
  readonly #hub: AgentHub
  readonly #timeoutMs: number

  constructor (options: { hub: AgentHub, timeoutMs?: number }) {
    this.#hub = options.hub
    this.#timeoutMs = options.timeoutMs ?? 60 * SECOND
  }

  async discover (serverId: string, connection: DatabaseConnection): Promise<Array<{ name: string, system: boolean }>> {
    const id = newFrameId()
    return await new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiting.delete(id)
        reject(new CloudPilotError('AGENT_TIMEOUT', 'the agent did not answer the discovery within 60 s'))
      }, this.#timeoutMs)
      timer.unref()
      this.#waiting.set(id, { serverId, resolve, reject, timer })
      if (!this.#hub.send(serverId, { type: 'discover', id, connection })) {
        clearTimeout(timer)
        this.#waiting.delete(id)
        reject(new CloudPilotError('AGENT_UNREACHABLE'))
      }
    })
  }

  settle (serverId: string, frame: DiscoverResultFrame): void {
    const w = this.#waiting.get(frame.requestId)
    if (w === undefined || w.serverId !== serverId) return
    this.#waiting.delete(frame.requestId)
    clearTimeout(w.timer)
    if (frame.error !== undefined) w.reject(CloudPilotError.fromData(normaliseErrorData(frame.error)))
    else w.resolve(frame.databases ?? [])
  }
}
