import { EventEmitter } from 'node:events'
import WebSocket from 'ws'
import type { Logger } from 'pino'
import {
  CloseCode, MAX_FRAME_BYTES, SECOND, decodeCoordinatorFrame, newFrameId,
  type CoordinatorFrame, type HeartbeatFrame, type HelloFrame, type OutgoingAgentFrame, type WelcomeFrame,
} from '@cloudpilot/protocol'
import { Backoff } from './backoff.ts'
import type { Outbox } from './outbox.ts'

const WELCOME_TIMEOUT_MS = 15 * SECOND
const RESEND_AFTER_MS = 15 * SECOND
/** Close codes after which reconnecting with the same credential is pointless. */
const FATAL_CLOSE = new Map<number, string>([
  [CloseCode.CREDENTIAL_REJECTED, 'the coordinator rejected the agent credential: enroll the server again'],
  [CloseCode.SERVER_REVOKED, 'the server was revoked on the coordinator: enroll it again to resume backups'],
  [CloseCode.PROTOCOL_MISMATCH, 'the coordinator speaks another protocol version: upgrade the agent'],
])

export interface ConnectionEvents {
  'conn:welcome': [WelcomeFrame]
  'conn:lost': [{ code: number, reason: string }]
  'conn:fatal': [string]
  'conn:frame': [Exclude<CoordinatorFrame, WelcomeFrame>]
}

/**
 * The agent's one WebSocket to the coordinator: hello/welcome, heartbeats, outbox delivery with acks,
 * reconnect with jittered exponential backoff (cap 60 s), and liveness via ping/pong.
 */
export class CoordinatorConnection extends EventEmitter<ConnectionEvents> {
  readonly #url: string
  readonly #credential: string
  readonly #log: Logger
  readonly #outbox: Outbox
  readonly #hello: () => Promise<Omit<HelloFrame, 'id' | 'type'>>
  readonly #heartbeat: () => Promise<Omit<HeartbeatFrame, 'id' | 'type'>>
  readonly #backoff = new Backoff()
  #ws: WebSocket | null = null
  #ready = false
  #stopped = false
  #reconnectTimer: NodeJS.Timeout | null = null
  #heartbeatTimer: NodeJS.Timeout | null = null
  #resendTimer: NodeJS.Timeout | null = null
  #welcomeTimer: NodeJS.Timeout | null = null
  #lastConnectedAt: Date | null = null

  constructor (options: {
    coordinatorUrl: string
    credential: string
    log: Logger
    outbox: Outbox
    hello: () => Promise<Omit<HelloFrame, 'id' | 'type'>>
    heartbeat: () => Promise<Omit<HeartbeatFrame, 'id' | 'type'>>
  }) {
    super()
    const url = new URL(options.coordinatorUrl)
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:'
    url.pathname = url.pathname.replace(/\/+$/, '') + '/agent/ws'
    this.#url = url.toString()
    this.#credential = options.credential
    this.#log = options.log
    this.#outbox = options.outbox
    this.#hello = options.hello
    this.#heartbeat = options.heartbeat
  }

  get ready (): boolean {
    return this.#ready
  }

  get lastConnectedAt (): Date | null {
    return this.#lastConnectedAt
  }

  start (): void {
    this.#stopped = false
    this.#connect()
  }

  /** Sends a frame now; false when not connected (callers that must not lose it use the outbox). */
  send (frame: OutgoingAgentFrame): boolean {
    const ws = this.#ws
    if (!this.#ready || ws === null || ws.readyState !== WebSocket.OPEN) return false
    ws.send(JSON.stringify({ ...frame, id: frame.id ?? newFrameId() }))
    return true
  }

  /** Sends outbox entries that are due (all unacked ones right after a (re)connect). */
  flushOutbox (): void {
    if (!this.#ready) return
    for (const frame of this.#outbox.due(RESEND_AFTER_MS)) {
      if (!this.send(frame)) return
      this.#outbox.markSent(frame.id)
    }
  }

  #connect (): void {
    if (this.#stopped) return
    const ws = new WebSocket(this.#url, {
      headers: { authorization: `Bearer ${this.#credential}` },
      maxPayload: 8 * MAX_FRAME_BYTES,
      handshakeTimeout: 15 * SECOND,
      perMessageDeflate: false,
    })
    this.#ws = ws
    ws.on('open', () => {
      this.#log.debug('socket open, sending hello')
      this.#hello().then((hello) => {
        ws.send(JSON.stringify({ type: 'hello', id: newFrameId(), ...hello }))
      }).catch((err: unknown) => { this.#log.error({ err }, 'could not build hello'); ws.terminate() })
      this.#welcomeTimer = setTimeout(() => { this.#log.warn('no welcome from the coordinator'); ws.terminate() }, WELCOME_TIMEOUT_MS)
    })
    ws.on('message', (data: Buffer, isBinary: boolean) => this.#onMessage(ws, data, isBinary))
    ws.on('ping', () => { /* ws answers pong itself */ })
    ws.on('unexpected-response', (_req, res) => {
      const status = res.statusCode ?? 0
      res.resume()
      if (status === 401 || status === 403) {
        this.#fatal(`the coordinator rejected the agent credential (HTTP ${status}): enroll the server again`)
      } else {
        this.#log.warn({ status }, 'coordinator refused the WebSocket upgrade')
      }
      ws.terminate()
    })
    ws.on('error', (err) => { this.#log.warn({ err: err.message, url: this.#url }, 'connection error') })
    ws.on('close', (code, reasonBuffer) => {
      const reason = reasonBuffer.toString()
      const wasReady = this.#ready
      this.#ready = false
      this.#ws = null
      this.#clearTimers()
      if (wasReady) {
        this.#log.warn({ code, reason }, 'disconnected from the coordinator')
        this.emit('conn:lost', { code, reason })
      }
      const fatal = FATAL_CLOSE.get(code)
      if (fatal !== undefined) {
        this.#fatal(`${fatal} (${reason})`)
        return
      }
      this.#scheduleReconnect()
    })
  }

  #fatal (message: string): void {
    if (this.#stopped) return
    this.#stopped = true
    this.#log.error(message)
    this.emit('conn:fatal', message)
  }

  #scheduleReconnect (): void {
    if (this.#stopped || this.#reconnectTimer !== null) return
    const delay = this.#backoff.next()
    this.#log.info({ delayMs: delay }, 'reconnecting')
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = null
      this.#connect()
    }, delay)
  }

  #onMessage (ws: WebSocket, data: Buffer, isBinary: boolean): void {
    const decoded = isBinary ? { ok: false as const, code: 'FRAME_INVALID' as const, message: 'binary frames are not part of the protocol' } : decodeCoordinatorFrame(data)
    if (!decoded.ok) {
      this.#log.warn({ code: decoded.code, reason: decoded.message }, 'rejected coordinator frame')
      if (ws.readyState === WebSocket.OPEN) {
        ws.send(JSON.stringify({ type: 'error', id: newFrameId(), code: decoded.code, message: decoded.message, ...(decoded.refId === undefined ? {} : { refId: decoded.refId }) }))
      }
      return
    }
    const frame = decoded.frame
    if (frame.type === 'welcome') {
      this.#onWelcome(frame)
      return
    }
    if (frame.type === 'ack') {
      this.#outbox.ack(frame.ackId).catch((err: unknown) => this.#log.error({ err }, 'outbox ack failed'))
      if (!frame.ok) this.#log.warn({ ackId: frame.ackId, error: frame.error }, 'coordinator refused a status report')
      return
    }
    if (frame.type === 'error') {
      this.#log.warn({ code: frame.code, refId: frame.refId, reason: frame.message }, 'coordinator reported a protocol error')
      return
    }
    if (!this.#ready) return
    this.emit('conn:frame', frame)
  }

  #onWelcome (welcome: WelcomeFrame): void {
    if (this.#welcomeTimer !== null) clearTimeout(this.#welcomeTimer)
    this.#ready = true
    this.#lastConnectedAt = new Date()
    this.#backoff.reset()
    this.#log.info({ serverId: welcome.serverId, heartbeatIntervalMs: welcome.heartbeatIntervalMs }, 'connected to the coordinator')
    this.#heartbeatTimer = setInterval(() => {
      this.#heartbeat().then((hb) => this.send({ type: 'heartbeat', ...hb })).catch((err: unknown) => this.#log.warn({ err }, 'heartbeat failed'))
    }, welcome.heartbeatIntervalMs)
    this.#resendTimer = setInterval(() => this.flushOutbox(), Math.min(5 * SECOND, welcome.heartbeatIntervalMs))
    this.emit('conn:welcome', welcome)
    this.#outbox.resetSent()
    this.flushOutbox()
  }

  #clearTimers (): void {
    for (const t of [this.#heartbeatTimer, this.#resendTimer, this.#welcomeTimer]) if (t !== null) clearInterval(t)
    this.#heartbeatTimer = null
    this.#resendTimer = null
    this.#welcomeTimer = null
  }

  /** Waits (bounded) until the outbox is empty, e.g. before exiting. */
  async drainOutbox (timeoutMs: number): Promise<boolean> {
    const until = Date.now() + timeoutMs
    while (this.#outbox.size > 0 && Date.now() < until) {
      this.flushOutbox()
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    return this.#outbox.size === 0
  }

  async stop (): Promise<void> {
    this.#stopped = true
    if (this.#reconnectTimer !== null) clearTimeout(this.#reconnectTimer)
    this.#reconnectTimer = null
    this.#clearTimers()
    const ws = this.#ws
    if (ws === null) return
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => { ws.terminate(); resolve() }, 2000)
      ws.once('close', () => { clearTimeout(t); resolve() })
      ws.close(CloseCode.GOING_AWAY, 'agent stopping')
    })
  }
}
