import { CloudPilotError, SECOND, newFrameId, type OutgoingCoordinatorFrame } from '@cloudpilot/protocol'
import type { AgentHub } from '../hub/agent-hub.ts'

interface Waiting {
  serverId: string
  resolve: (frame: unknown) => void
  reject: (err: Error) => void
  timer: NodeJS.Timeout
}

/**
 * Request/response over an agent's socket: send a frame with a fresh id, resolve with the agent's answer that
 * names it as `requestId`. Answers from another server than the one asked are ignored.
 */
export class AgentRequests {
  readonly #waiting = new Map<string, Waiting>()
  readonly #hub: AgentHub

  constructor (options: { hub: AgentHub }) {
    this.#hub = options.hub
  }

  async request<R> (serverId: string, frame: OutgoingCoordinatorFrame, options: { timeoutMs?: number, what: string }): Promise<R> {
    const id = newFrameId()
    const timeoutMs = options.timeoutMs ?? 60 * SECOND
    return await new Promise<R>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiting.delete(id)
        reject(new CloudPilotError('AGENT_TIMEOUT', `the agent did not answer the ${options.what} within ${Math.round(timeoutMs / 1000)} s`))
      }, timeoutMs)
      timer.unref()
      this.#waiting.set(id, { serverId, resolve: resolve as (frame: unknown) => void, reject, timer })
      if (!this.#hub.send(serverId, { ...frame, id })) {
        clearTimeout(timer)
        this.#waiting.delete(id)
        reject(new CloudPilotError('AGENT_UNREACHABLE', `the server's agent is not connected, so it cannot run the ${options.what}`))
      }
    })
  }

  settle (serverId: string, requestId: string, frame: unknown): void {
    const w = this.#waiting.get(requestId)
    if (w === undefined || w.serverId !== serverId) return
    this.#waiting.delete(requestId)
    clearTimeout(w.timer)
    w.resolve(frame)
  }
}
