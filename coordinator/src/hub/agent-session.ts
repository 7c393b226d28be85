import type { WebSocket } from 'ws'
import type { Logger } from 'pino'
import { newFrameId, type OutgoingCoordinatorFrame } from '@cloudpilot/protocol'

/** Most bytes we let queue towards one agent before treating it as dead (it is not reading). */
const MAX_BUFFERED_BYTES = 16 * 1024 * 1024

/** One authenticated agent connection. */
export class AgentSession {
  readonly serverId: string
  readonly workspaceId: string
  readonly socket: WebSocket
  readonly log: Logger
  readonly connectedAt = Date.now()
  /** Set once a valid hello was received. */
  ready = false
  lastSeenAt = Date.now()
  /** True when lastSeenAt/health changed since the last flush to the database. */
  dirty = true
  health: Record<string, unknown> | null = null
  alive = true
  runningJobs: string[] = []
  invalidFrames = 0

  constructor (options: { serverId: string, workspaceId: string, socket: WebSocket, log: Logger }) {
    this.serverId = options.serverId
    this.workspaceId = options.workspaceId
    this.socket = options.socket
    this.log = options.log
  }

  touch (): void {
    this.lastSeenAt = Date.now()
    this.alive = true
    this.dirty = true
  }

  /** Sends a frame; false when the socket is not open or the agent stopped reading (then it is terminated). */
  send (frame: OutgoingCoordinatorFrame): boolean {
    if (this.socket.readyState !== this.socket.OPEN) return false
    if (this.socket.bufferedAmount > MAX_BUFFERED_BYTES) {
      this.log.warn({ bufferedAmount: this.socket.bufferedAmount }, 'agent is not reading its frames; terminating the connection')
      this.socket.terminate()
      return false
    }
    this.socket.send(JSON.stringify({ ...frame, id: frame.id ?? newFrameId() }))
    return true
  }

  close (code: number, reason: string): void {
    if (this.socket.readyState === this.socket.OPEN || this.socket.readyState === this.socket.CONNECTING) this.socket.close(code, reason)
  }
}
