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
  /** When the agent last sent a frame (what the database's last_seen_at gets). */
  lastSeenAt = Date.now()
  /** When the agent last answered a ping: proves the connection, not that the agent works. */
  lastPongAt = 0
  /** True when lastSeenAt/health changed since the last flush to the database. */
  dirty = true
  health: Record<string, unknown> | null = null
  /** False from a ping until anything comes back: the next check then terminates the connection. */
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

  pong (): void {
    this.lastPongAt = Date.now()
    this.alive = true
  }

  /** When anything last came from the agent: a frame or a pong. */
  get lastHeardAt (): number {
    return Math.max(this.lastSeenAt, this.lastPongAt)
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
