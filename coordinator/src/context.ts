import type { Logger } from 'pino'
import type { CoordinatorConfig } from './config.ts'
import type { Db } from './db/open-database.ts'
import type { SecretBox } from './crypto/secret-box.ts'
import type { AgentHub } from './hub/agent-hub.ts'
import type { BackupRecords } from './services/backup-records.ts'
import type { Dispatcher } from './services/dispatcher.ts'
import type { Transfers } from './services/transfers.ts'
import type { AgentRequests } from './services/agent-requests.ts'
import type { Scheduler } from './services/scheduler.ts'
import type { RetentionSweeper } from './services/retention-sweeper.ts'
import type { RestoreRecords } from './services/restore-records.ts'
import type { RestoreService } from './services/restores.ts'
import type { DiscoveryRequests } from './services/discovery-requests.ts'
import type { FastifyReply, FastifyRequest } from 'fastify'

/** The coordinator's parts, built once at start and handed to the routes. */
export interface CoordinatorContext {
  config: CoordinatorConfig
  log: Logger
  db: Db
  secrets: SecretBox
  hub: AgentHub
  records: BackupRecords
  dispatcher: Dispatcher
  transfers: Transfers
  /** Request/response frames to an agent (destination tests). */
  requests: AgentRequests
  /** Cron firing of plans; routes tell it about plan changes. */
  scheduler: Scheduler
  /** Retention sweeps (expiry, GFS) and their preview. */
  retention: RetentionSweeper
  /** The time for schedules and retention (injectable in tests). */
  clock: () => Date
  restores: RestoreRecords
  restoreService: RestoreService
  discovery: DiscoveryRequests
  /** fastify preHandler that requires an API token and sets request.auth. */
  authenticate: (request: FastifyRequest, reply: FastifyReply) => Promise<void>
  /** Base URL for install commands and agent transfers. */
  publicUrl: () => string
}
