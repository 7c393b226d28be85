import type { AddressInfo } from 'node:net'
import type { IncomingMessage } from 'node:http'
import type { Duplex } from 'node:stream'
import { PRODUCT_VERSION, SECOND } from '@cloudpilot/protocol'
import type { CoordinatorConfig } from './config.ts'
import { createLogger, type Logger } from './logger.ts'
import { openDatabase, type Database } from './db/open-database.ts'
import { loadMasterKey } from './crypto/master-key.ts'
import { SecretBox } from './crypto/secret-box.ts'
import { bootstrapAdmin, type AdminBootstrap } from './services/admin-bootstrap.ts'
import { createApiAuth } from './auth/api-auth.ts'
import { AgentHub } from './hub/agent-hub.ts'
import { createFrameRouter } from './hub/frame-router.ts'
import { BackupRecords } from './services/backup-records.ts'
import { Dispatcher } from './services/dispatcher.ts'
import { Liveness } from './services/liveness.ts'
import { Transfers } from './services/transfers.ts'
import { DiscoveryRequests } from './services/discovery-requests.ts'
import { AgentRequests } from './services/agent-requests.ts'
import { ReplicaRegistry } from './services/replica-registry.ts'
import { LocalClusterBus, PgClusterBus, type ClusterBus } from './services/cluster-bus.ts'
import { Scheduler } from './services/scheduler.ts'
import { RetentionSweeper } from './services/retention-sweeper.ts'
import { RestoreRecords } from './services/restore-records.ts'
import { RestoreService } from './services/restores.ts'
import { createHttpApp, type App } from './http/app.ts'
import type { CoordinatorContext } from './context.ts'
import { healthRoutes } from './routes/health.ts'
import { enrollmentRoutes } from './routes/enrollment.ts'
import { serverRoutes } from './routes/servers.ts'
import { destinationRoutes } from './routes/destinations.ts'
import { planRoutes } from './routes/plans.ts'
import { backupRoutes } from './routes/backups.ts'
import { agentTransferRoutes } from './routes/agent-transfers.ts'
import { workspaceRoutes } from './routes/workspaces.ts'
import { retentionRoutes } from './routes/retention.ts'
import { restoreRoutes } from './routes/restores.ts'
import { discoveryRoutes } from './routes/discovery.ts'
import { installScriptRoutes } from './routes/install-script.ts'
import { agentPackageRoutes } from './routes/agent-package.ts'

export interface Coordinator {
  app: App
  ctx: CoordinatorContext
  database: Database
  admin: AdminBootstrap
  /** Starts listening; resolves with the bound address. */
  listen (): Promise<{ port: number, host: string }>
  /** Graceful stop: close agent sockets, flush liveness, stop HTTP, close the database. */
  close (): Promise<void>
}

export interface CoordinatorOptions {
  log?: Logger
  /** Tests: the time schedules and retention work with. */
  clock?: () => Date
  /** Tests: false builds the scheduler without starting node-cron timers (slots are then driven by the test). */
  scheduleTimers?: boolean
}

/** Builds the whole coordinator from its config (no listening yet). */
export async function createCoordinator (config: CoordinatorConfig, options: CoordinatorOptions = {}): Promise<Coordinator> {
  const log = options.log ?? createLogger(config.logLevel)
  const { key } = await loadMasterKey(config.masterKey, config.dataDir)
  const secrets = new SecretBox(key)
  const database = await openDatabase({ databaseUrl: config.databaseUrl, dataDir: config.dataDir })
  const db = database.db
  const admin = await bootstrapAdmin(db, { presetToken: config.adminToken, dataDir: config.dataDir })

  const records = new BackupRecords({ db, log: log.child({ component: 'backups' }) })
  const restores = new RestoreRecords({ db, log: log.child({ component: 'restores' }) })
  const transfers = new Transfers()
  // This process among the replicas sharing the database, and the LISTEN/NOTIFY bus between them (PostgreSQL).
  const registry = new ReplicaRegistry({ db, log: log.child({ component: 'replicas' }), beatMs: Math.min(10 * SECOND, Math.max(SECOND, config.heartbeatIntervalMs)) })
  const bus: ClusterBus = database.kind === 'postgresql' && config.databaseUrl !== null
    ? new PgClusterBus({ databaseUrl: config.databaseUrl, db, log: log.child({ component: 'bus' }), replicaId: registry.id })
    : new LocalClusterBus({ replicaId: registry.id })
  let dispatcher: Dispatcher | null = null
  let retention: RetentionSweeper | null = null
  let restoreService: RestoreService | null = null
  // The hub needs the request services and they need the hub: wire through holders.
  const discoveryHolder: { current: DiscoveryRequests | null } = { current: null }
  const requestsHolder: { current: AgentRequests | null } = { current: null }
  const hub = new AgentHub({
    db,
    log: log.child({ component: 'hub' }),
    heartbeatIntervalMs: config.heartbeatIntervalMs,
    coordinatorVersion: PRODUCT_VERSION,
    handlers: createFrameRouter({
      db,
      records,
      restores,
      transfers,
      dispatcher: () => { if (dispatcher === null) throw new Error('dispatcher not ready'); return dispatcher },
      retention: () => { if (retention === null) throw new Error('retention not ready'); return retention },
      registry,
      log: log.child({ component: 'frames' }),
      restoreService: () => { if (restoreService === null) throw new Error('restore service not ready'); return restoreService },
      discovery: { settle: (serverId, frame) => discoveryHolder.current?.settle(serverId, frame) } as DiscoveryRequests,
      requests: { settle: (serverId, requestId, frame) => requestsHolder.current?.settle(serverId, requestId, frame) } as AgentRequests,
    }),
  })
  const discovery = new DiscoveryRequests({ hub })
  discoveryHolder.current = discovery
  const requests = new AgentRequests({ hub })
  requestsHolder.current = requests
  dispatcher = new Dispatcher({
    db, hub, records, secrets, log: log.child({ component: 'dispatcher' }), allowPrivateEndpoints: config.allowPrivateEndpoints,
    // With PGlite there is one process: no other replica to forward to.
    forwarding: database.kind === 'postgresql' ? { registry, bus } : null,
  })
  const clock = options.clock ?? (() => new Date())
  const scheduler = new Scheduler({
    db, dispatcher, bus, clock, log: log.child({ component: 'scheduler' }), timers: options.scheduleTimers ?? true,
    resyncMs: config.scheduleResyncMs, lateGraceMs: config.scheduleLateGraceMs, lookbackMs: config.missedLookbackMs, allowSeconds: config.scheduleSeconds,
  })
  retention = new RetentionSweeper({
    db, hub, bus, clock, secrets, log: log.child({ component: 'retention' }), registry: database.kind === 'postgresql' ? registry : null,
    intervalMs: config.retentionSweepMs, allowPrivateEndpoints: config.allowPrivateEndpoints,
  })
  const sweeper = retention
  const forwardedDispatcher = dispatcher
  bus.onCommand((command) => {
    const done = command.kind === 'job.run'
      ? forwardedDispatcher.dispatchForwarded(command.backupIds)
      : command.kind === 'job.cancel' ? forwardedDispatcher.cancelForwarded(command.backupId) : sweeper.deleteForwarded(command.backupId)
    done.catch((err: unknown) => log.error({ err, command }, 'forwarded command failed'))
  })
  restoreService = new RestoreService({ db, hub, records: restores, secrets, log: log.child({ component: 'restores' }), allowPrivateEndpoints: config.allowPrivateEndpoints })
  const liveness = new Liveness({ db, hub, records, restores, log: log.child({ component: 'liveness' }), heartbeatIntervalMs: config.heartbeatIntervalMs, startTimeoutMs: config.startTimeoutMs, startupGraceMs: config.startupGraceMs })

  const app = await createHttpApp({ log })
  let boundUrl = `http://127.0.0.1:${config.port}`
  const ctx: CoordinatorContext = {
    config, log, db, secrets, hub, records, dispatcher, transfers, requests, scheduler, retention, clock, restores, restoreService, discovery,
    authenticate: createApiAuth(db),
    publicUrl: () => config.publicUrl ?? boundUrl,
  }
  healthRoutes(app, ctx)
  enrollmentRoutes(app, ctx)
  serverRoutes(app, ctx)
  destinationRoutes(app, ctx)
  planRoutes(app, ctx)
  backupRoutes(app, ctx)
  agentTransferRoutes(app, ctx)
  workspaceRoutes(app, ctx)
  retentionRoutes(app, ctx)
  restoreRoutes(app, ctx)
  discoveryRoutes(app, ctx)
  installScriptRoutes(app, ctx)
  agentPackageRoutes(app, ctx)

  app.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const url = req.url?.split('?')[0]
    if (url !== '/agent/ws') {
      socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n')
      return
    }
    hub.handleUpgrade(req, socket, head).catch((err: unknown) => { log.error({ err }, 'upgrade failed'); socket.destroy() })
  })
  app.addHook('preClose', async () => { await hub.close() })

  return {
    app,
    ctx,
    database,
    admin,
    async listen () {
      await app.listen({ port: config.port, host: config.host })
      const address = app.server.address() as AddressInfo
      const shownHost = config.host === '0.0.0.0' || config.host === '::' ? '127.0.0.1' : config.host
      boundUrl = `http://${shownHost}:${address.port}`
      liveness.start()
      await registry.start()
      await bus.start()
      await scheduler.start({ previousSeenAt: registry.previousSeenAt })
      sweeper.start()
      return { port: address.port, host: address.address }
    },
    async close () {
      const timer = setTimeout(() => { log.warn('graceful stop is taking long') }, 10 * SECOND)
      timer.unref()
      await scheduler.stop()
      await sweeper.stop()
      await app.close()
      await liveness.stop()
      await registry.stop()
      await bus.close()
      await database.close()
      clearTimeout(timer)
    },
  }
}
