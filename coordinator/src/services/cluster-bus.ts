import { EventEmitter } from 'node:events'
import { sql } from 'drizzle-orm'
import type { Logger } from 'pino'
import type pg from 'pg'
import { SECOND } from '@cloudpilot/protocol'
import type { Db } from '../db/open-database.ts'

/**
 * A command for the agent of `serverId`, sent to the replica that holds the agent's WebSocket. Only ids travel:
 * the receiving replica reads the row and builds the frame itself, so no secret ever passes through NOTIFY.
 */
export type ClusterCommand =
  | { kind: 'job.run', backupIds: string[] }
  | { kind: 'job.cancel', backupId: string }
  | { kind: 'backup.delete', backupId: string }

export interface ClusterBus {
  readonly replicaId: string
  /** Sends a command to one replica (fire and forget: the receiver records failures in the database). */
  send (replicaId: string, command: ClusterCommand): Promise<void>
  /** Tells every other replica that a plan was created, changed or deleted. */
  planChanged (planId: string): Promise<void>
  onCommand (handler: (command: ClusterCommand) => void): void
  onPlanChanged (handler: (planId: string) => void): void
  /** After the bus lost its connection and got it back: notifications may have been missed meanwhile. */
  onReconnected (handler: () => void): void
  start (): Promise<void>
  close (): Promise<void>
}

const PLANS_CHANNEL = 'cloudpilot_plans'
const COMMAND_KINDS = new Set(['job.run', 'job.cancel', 'backup.delete'])
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

function replicaChannel (replicaId: string): string {
  return `cloudpilot_replica_${replicaId.replace(/-/g, '')}`
}

function parseCommand (payload: string): ClusterCommand | null {
  try {
    const value = JSON.parse(payload) as { kind?: unknown, backupId?: unknown, backupIds?: unknown }
    if (typeof value.kind !== 'string' || !COMMAND_KINDS.has(value.kind)) return null
    if (value.kind === 'job.run') {
      const ids = value.backupIds
      if (!Array.isArray(ids) || ids.length === 0 || ids.length > 200 || !ids.every((id) => typeof id === 'string' && UUID.test(id))) return null
      return { kind: 'job.run', backupIds: ids as string[] }
    }
    if (typeof value.backupId !== 'string' || !UUID.test(value.backupId)) return null
    return { kind: value.kind, backupId: value.backupId } as ClusterCommand
  } catch {
    return null
  }
}

/**
 * PostgreSQL LISTEN/NOTIFY between coordinator replicas (DESIGN §6: PostgreSQL is the distributed engine).
 * One dedicated connection LISTENs on this replica's channel and on the plan-change channel; sending is a
 * `pg_notify` through the pool. The listening connection is checked every 15 s and re-opened when lost, after
 * which `onReconnected` handlers run (the scheduler then re-reads every plan).
 */
export class PgClusterBus implements ClusterBus {
  readonly replicaId: string
  readonly #url: string
  readonly #db: Db
  readonly #log: Logger
  readonly #events = new EventEmitter()
  #client: pg.Client | null = null
  #closed = false
  #reconnectTimer: NodeJS.Timeout | null = null
  #checkTimer: NodeJS.Timeout | null = null
  #backoffMs = SECOND

  constructor (options: { databaseUrl: string, db: Db, log: Logger, replicaId: string }) {
    this.#url = options.databaseUrl
    this.#db = options.db
    this.#log = options.log
    this.replicaId = options.replicaId
  }

  async start (): Promise<void> {
    await this.#connect()
    this.#checkTimer = setInterval(() => { this.#check().catch(() => {}) }, 15 * SECOND)
    this.#checkTimer.unref()
  }

  async #connect (): Promise<void> {
    const { default: pgModule } = await import('pg')
    const client = new pgModule.Client({ connectionString: this.#url, keepAlive: true, application_name: `cloudpilot-bus-${this.replicaId.slice(0, 8)}` })
    client.on('notification', (message) => this.#onNotification(message.channel, message.payload ?? ''))
    client.on('error', (err) => { this.#lost(client, err) })
    client.on('end', () => { this.#lost(client, new Error('connection ended')) })
    await client.connect()
    await client.query(`LISTEN ${PLANS_CHANNEL}`)
    await client.query(`LISTEN ${replicaChannel(this.replicaId)}`)
    this.#client = client
    this.#backoffMs = SECOND
  }

  #lost (client: pg.Client, err: Error): void {
    if (this.#client !== client || this.#closed) return
    this.#client = null
    client.removeAllListeners('end')
    client.end().catch(() => {})
    this.#log.warn({ err: err.message }, 'cluster bus connection lost; reconnecting')
    this.#scheduleReconnect()
  }

  #scheduleReconnect (): void {
    if (this.#closed || this.#reconnectTimer !== null) return
    const delay = this.#backoffMs
    this.#backoffMs = Math.min(30 * SECOND, this.#backoffMs * 2)
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = null
      this.#connect().then(() => {
        this.#log.info('cluster bus reconnected')
        this.#events.emit('reconnected')
      }, (err: unknown) => {
        this.#log.warn({ err: (err as Error).message }, 'cluster bus could not reconnect')
        this.#scheduleReconnect()
      })
    }, delay)
    this.#reconnectTimer.unref()
  }

  /** A half-open connection delivers nothing and reports nothing: ask it something now and then. */
  async #check (): Promise<void> {
    const client = this.#client
    if (client === null) return
    try {
      await client.query('select 1')
    } catch (err) {
      this.#lost(client, err as Error)
    }
  }

  #onNotification (channel: string, payload: string): void {
    if (channel === PLANS_CHANNEL) {
      const [from, planId] = payload.split(':')
      if (from !== this.replicaId && planId !== undefined && UUID.test(planId)) this.#events.emit('plan', planId)
      return
    }
    const command = parseCommand(payload)
    if (command === null) {
      this.#log.warn({ channel }, 'ignored an unreadable cluster command')
      return
    }
    this.#events.emit('command', command)
  }

  async send (replicaId: string, command: ClusterCommand): Promise<void> {
    await this.#db.execute(sql`select pg_notify(${replicaChannel(replicaId)}, ${JSON.stringify(command)})`)
  }

  async planChanged (planId: string): Promise<void> {
    await this.#db.execute(sql`select pg_notify(${PLANS_CHANNEL}, ${`${this.replicaId}:${planId}`})`)
  }

  onCommand (handler: (command: ClusterCommand) => void): void { this.#events.on('command', handler) }
  onPlanChanged (handler: (planId: string) => void): void { this.#events.on('plan', handler) }
  onReconnected (handler: () => void): void { this.#events.on('reconnected', handler) }

  async close (): Promise<void> {
    this.#closed = true
    if (this.#reconnectTimer !== null) clearTimeout(this.#reconnectTimer)
    if (this.#checkTimer !== null) clearInterval(this.#checkTimer)
    const client = this.#client
    this.#client = null
    if (client !== null) {
      client.removeAllListeners('end')
      await client.end().catch(() => {})
    }
  }
}

/**
 * Embedded PGlite serves one process, so there is no other replica: commands for another replica cannot be
 * delivered (the caller treats the agent as not connected) and plan changes concern this process only.
 */
export class LocalClusterBus implements ClusterBus {
  readonly replicaId: string
  readonly #events = new EventEmitter()

  constructor (options: { replicaId: string }) {
    this.replicaId = options.replicaId
  }

  async start (): Promise<void> {}
  async send (replicaId: string, command: ClusterCommand): Promise<void> {
    if (replicaId === this.replicaId) queueMicrotask(() => this.#events.emit('command', command))
  }

  async planChanged (): Promise<void> {}
  onCommand (handler: (command: ClusterCommand) => void): void { this.#events.on('command', handler) }
  onPlanChanged (): void {}
  onReconnected (): void {}
  async close (): Promise<void> {}
}
