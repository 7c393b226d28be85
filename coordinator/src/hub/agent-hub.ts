import type { IncomingMessage } from 'node:http'
import type { Duplex } from 'node:stream'
import { WebSocketServer, type WebSocket } from 'ws'
import type { Logger } from 'pino'
import { and, eq, isNull } from 'drizzle-orm'
import {
  CloseCode, MAX_FRAME_BYTES, PROTOCOL_VERSION, SECOND, decodeAgentFrame, newFrameId,
  type AgentFrame, type HelloFrame, type OutgoingCoordinatorFrame,
} from '@cloudpilot/protocol'
import type { Db } from '../db/open-database.ts'
import { servers } from '../db/schema.ts'
import { hashToken } from '../crypto/tokens.ts'
import { bearerToken } from '../auth/api-auth.ts'
import { AgentSession } from './agent-session.ts'

/** What the rest of the coordinator does with agent frames. Throwing from onJobStatus withholds the ack. */
export interface AgentFrameHandlers {
  /** A valid hello: update the server row; answer which of the agent's running jobs it must abort. */
  onHello (session: AgentSession, hello: HelloFrame): Promise<{ cancelJobs: string[] }>
  /** After the welcome went out: re-dispatch pending work. */
  afterWelcome (session: AgentSession, hello: HelloFrame): Promise<void>
  onFrame (session: AgentSession, frame: Exclude<AgentFrame, HelloFrame>): Promise<void>
  onDisconnect (session: AgentSession): void
}

const HELLO_TIMEOUT_MS = 10 * SECOND
/** ws closes (1009) frames beyond this; frames between MAX_FRAME_BYTES and this get an error frame instead. */
const WS_MAX_PAYLOAD = 8 * MAX_FRAME_BYTES
/** A peer that keeps sending invalid frames is disconnected after this many. */
const MAX_INVALID_FRAMES = 100
/**
 * The connection check visits every session once per heartbeat interval, a slice of them per tick, so that no
 * tick loops over every socket of a large fleet (10,000 pings written at once stall the API for 100+ ms).
 */
const CHECK_TICKS_PER_INTERVAL = 20
/** A session heard from within this many intervals needs no ping: its heartbeats prove the connection. */
const QUIET_INTERVALS_BEFORE_PING = 1.5

/**
 * The WebSocket hub at /agent/ws. Authenticates the agent credential at upgrade (deny by default), requires a
 * hello of the same protocol version, validates every frame, keeps one session per server, pings for liveness.
 */
export class AgentHub {
  readonly #wss: WebSocketServer
  readonly #sessions = new Map<string, AgentSession>()
  readonly #db: Db
  readonly #log: Logger
  readonly #handlers: AgentFrameHandlers
  readonly #heartbeatIntervalMs: number
  readonly #coordinatorVersion: string
  #pingTimer: NodeJS.Timeout | null = null
  /** The sessions of the current round of connection checks, and how far the round got. */
  #round: AgentSession[] = []
  #roundAt = 0

  constructor (options: { db: Db, log: Logger, handlers: AgentFrameHandlers, heartbeatIntervalMs: number, coordinatorVersion: string }) {
    this.#db = options.db
    this.#log = options.log
    this.#handlers = options.handlers
    this.#heartbeatIntervalMs = options.heartbeatIntervalMs
    this.#coordinatorVersion = options.coordinatorVersion
    this.#wss = new WebSocketServer({ noServer: true, maxPayload: WS_MAX_PAYLOAD, perMessageDeflate: false })
    const interval = Math.max(1000, options.heartbeatIntervalMs)
    this.#pingTimer = setInterval(() => this.#checkSlice(interval), Math.max(50, Math.floor(interval / CHECK_TICKS_PER_INTERVAL)))
    this.#pingTimer.unref()
  }

  get size (): number {
    return this.#sessions.size
  }

  sessions (): IterableIterator<AgentSession> {
    return this.#sessions.values()
  }

  get (serverId: string): AgentSession | undefined {
    const s = this.#sessions.get(serverId)
    return s?.ready === true ? s : undefined
  }

  isConnected (serverId: string): boolean {
    return this.get(serverId) !== undefined
  }

  send (serverId: string, frame: OutgoingCoordinatorFrame): boolean {
    return this.get(serverId)?.send(frame) ?? false
  }

  /** Closes a server's live socket at once (revocation). */
  disconnect (serverId: string, code: number, reason: string): void {
    const s = this.#sessions.get(serverId)
    if (s === undefined) return
    s.close(code, reason)
    setTimeout(() => s.socket.terminate(), 1000).unref()
  }

  async handleUpgrade (req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const token = bearerToken(req.headers.authorization)
    let server: { id: string, workspaceId: string } | undefined
    try {
      if (token !== null) {
        [server] = await this.#db.select({ id: servers.id, workspaceId: servers.workspaceId }).from(servers)
          .where(and(eq(servers.credentialHash, hashToken(token)), isNull(servers.revokedAt)))
      }
    } catch (err) {
      this.#log.error({ err }, 'agent authentication failed')
      rejectUpgrade(socket, 503, 'INTERNAL', 'coordinator could not check the credential')
      return
    }
    if (server === undefined) {
      rejectUpgrade(socket, 401, 'AGENT_CREDENTIAL_INVALID', 'unknown or revoked agent credential')
      return
    }
    const found = server
    this.#wss.handleUpgrade(req, socket, head, (ws) => this.#accept(ws, found.id, found.workspaceId))
  }

  #accept (ws: WebSocket, serverId: string, workspaceId: string): void {
    const session = new AgentSession({ serverId, workspaceId, socket: ws, log: this.#log.child({ serverId }) })
    const helloTimer = setTimeout(() => session.close(CloseCode.HELLO_TIMEOUT, 'no hello received'), HELLO_TIMEOUT_MS)
    helloTimer.unref()
    // Frames are handled one at a time per session, in arrival order.
    let queue: Promise<void> = Promise.resolve()
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      session.touch()
      queue = queue.then(() => this.#onMessage(session, data, isBinary, helloTimer)).catch((err: unknown) => {
        session.log.error({ err }, 'frame handling failed')
      })
    })
    ws.on('pong', () => { session.pong() })
    ws.on('error', (err) => session.log.warn({ err: err.message }, 'agent socket error'))
    ws.on('close', (code) => {
      clearTimeout(helloTimer)
      if (this.#sessions.get(serverId) === session) {
        this.#sessions.delete(serverId)
        session.log.info({ code }, 'agent disconnected')
        this.#handlers.onDisconnect(session)
      }
    })
  }

  async #onMessage (session: AgentSession, data: Buffer, isBinary: boolean, helloTimer: NodeJS.Timeout): Promise<void> {
    const decoded = isBinary ? { ok: false as const, code: 'FRAME_INVALID' as const, message: 'binary frames are not part of the protocol' } : decodeAgentFrame(data)
    if (!decoded.ok) {
      session.invalidFrames++
      session.log.warn({ code: decoded.code, reason: decoded.message }, 'rejected agent frame')
      session.send({ type: 'error', code: decoded.code, message: decoded.message, ...(decoded.refId === undefined ? {} : { refId: decoded.refId }) })
      if (session.invalidFrames > MAX_INVALID_FRAMES) session.close(1008, 'too many invalid frames')
      return
    }
    const frame = decoded.frame
    if (frame.type === 'hello') {
      clearTimeout(helloTimer)
      await this.#onHello(session, frame)
      return
    }
    if (!session.ready) {
      session.send({ type: 'error', refId: frame.id, code: 'FRAME_INVALID', message: 'hello must be the first frame' })
      return
    }
    await this.#handlers.onFrame(session, frame)
  }

  async #onHello (session: AgentSession, hello: HelloFrame): Promise<void> {
    if (hello.protocolVersion !== PROTOCOL_VERSION) {
      session.send({ type: 'error', refId: hello.id, code: 'PROTOCOL_MISMATCH', message: `coordinator speaks protocol ${PROTOCOL_VERSION}, agent ${hello.protocolVersion}: upgrade the agent` })
      session.close(CloseCode.PROTOCOL_MISMATCH, `protocol ${PROTOCOL_VERSION} required`)
      return
    }
    if (session.ready) {
      session.send({ type: 'error', refId: hello.id, code: 'FRAME_INVALID', message: 'hello was already received' })
      return
    }
    const previous = this.#sessions.get(session.serverId)
    if (previous !== undefined && previous !== session) {
      previous.log.info('replaced by a newer connection of the same agent')
      this.#sessions.delete(session.serverId)
      previous.close(CloseCode.REPLACED, 'replaced by a newer connection')
    }
    this.#sessions.set(session.serverId, session)
    session.runningJobs = hello.runningJobs
    const { cancelJobs } = await this.#handlers.onHello(session, hello)
    session.ready = true
    session.send({ type: 'welcome', id: newFrameId(), serverId: session.serverId, coordinatorVersion: this.#coordinatorVersion, heartbeatIntervalMs: this.#heartbeatIntervalMs, cancelJobs })
    session.log.info({ agentVersion: hello.agentVersion, hostname: hello.hostname, running: hello.runningJobs.length }, 'agent connected')
    await this.#handlers.afterWelcome(session, hello)
  }

  /**
   * One tick of the connection check: the next slice of the round (a round is every session, once per interval).
   * A session that sent heartbeats recently is left alone; a quiet one is pinged; one that answered nothing
   * since its ping, an interval ago, is terminated.
   */
  #checkSlice (intervalMs: number): void {
    if (this.#roundAt >= this.#round.length) {
      this.#round = [...this.#sessions.values()]
      this.#roundAt = 0
    }
    const end = Math.min(this.#round.length, this.#roundAt + Math.ceil(this.#round.length / CHECK_TICKS_PER_INTERVAL))
    const now = Date.now()
    for (; this.#roundAt < end; this.#roundAt++) {
      const session = this.#round[this.#roundAt] as AgentSession
      if (this.#sessions.get(session.serverId) !== session) continue
      if (now - session.lastHeardAt < QUIET_INTERVALS_BEFORE_PING * intervalMs) {
        session.alive = true
        continue
      }
      if (!session.alive) {
        session.log.warn('agent did not answer ping; terminating the connection')
        session.socket.terminate()
        continue
      }
      session.alive = false
      try { session.socket.ping() } catch { /* closed meanwhile */ }
    }
    if (this.#roundAt >= this.#round.length) this.#round = []
  }

  async close (): Promise<void> {
    if (this.#pingTimer !== null) clearInterval(this.#pingTimer)
    for (const s of this.#sessions.values()) s.close(CloseCode.GOING_AWAY, 'coordinator shutting down')
    await new Promise<void>((resolve) => this.#wss.close(() => resolve()))
    for (const s of this.#sessions.values()) s.socket.terminate()
  }
}

function rejectUpgrade (socket: Duplex, status: number, code: string, message: string): void {
  const body = JSON.stringify({ error: { code, message } })
  socket.end(`HTTP/1.1 ${status} ${status === 401 ? 'Unauthorized' : 'Service Unavailable'}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`)
}
