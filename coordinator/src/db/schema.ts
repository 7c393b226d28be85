import { sql } from 'drizzle-orm'
import { bigint, boolean, index, integer, jsonb, pgTable, text, timestamp, uniqueIndex, uuid } from 'drizzle-orm/pg-core'
import type { DestinationType, BackupStatus, BackupType, BillingStatus, Compression, RestorePart, RestoreStatus, ServerStatus, Trigger, ErrorData } from '@cloudpilot/protocol'

/**
 * The coordinator's one schema, used with both drivers (PGlite embedded, PostgreSQL over pg).
 * Vocabulary columns hold the exact strings of DESIGN.md §3. Secret columns (`*_enc`) hold AES-256-GCM
 * ciphertext made by crypto/secret-box.ts, never plaintext.
 */

const createdAt = () => timestamp('created_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow()
const ts = (name: string) => timestamp(name, { withTimezone: true, mode: 'date' })

export const workspaces = pgTable('workspaces', {
  id: uuid('id').primaryKey().defaultRandom(),
  name: text('name').notNull(),
  /** Destination types this workspace may use. */
  grantedDestinationTypes: jsonb('granted_destination_types').$type<DestinationType[]>().notNull(),
  createdAt: createdAt(),
})

export const apiTokens = pgTable('api_tokens', {
  id: uuid('id').primaryKey().defaultRandom(),
  workspaceId: uuid('workspace_id').notNull().references(() => workspaces.id),
  name: text('name').notNull(),
  role: text('role').$type<'admin' | 'member'>().notNull(),
  /** sha256 of the token; the token itself is shown once. */
  tokenHash: text('token_hash').notNull(),
  createdAt: createdAt(),
  revokedAt: ts('revoked_at'),
}, (t) => [uniqueIndex('api_tokens_hash_uq').on(t.tokenHash)])

export const enrollmentTokens = pgTable('enrollment_tokens', {
  id: uuid('id').primaryKey().defaultRandom(),
  workspaceId: uuid('workspace_id').notNull().references(() => workspaces.id),
  tokenHash: text('token_hash').notNull(),
  serverName: text('server_name'),
  expiresAt: ts('expires_at').notNull(),
  usedAt: ts('used_at'),
  serverId: uuid('server_id'),
  createdAt: createdAt(),
}, (t) => [uniqueIndex('enrollment_tokens_hash_uq').on(t.tokenHash)])

export interface ServerUpgrade {
  status: 'pending' | 'in_progress' | 'completed' | 'failed'
  fromVersion: string | null
  targetVersion: string
  requestedAt: string
  finishedAt: string | null
  error: ErrorData | null
}

export const servers = pgTable('servers', {
  id: uuid('id').primaryKey().defaultRandom(),
  workspaceId: uuid('workspace_id').notNull().references(() => workspaces.id),
  name: text('name').notNull(),
  hostname: text('hostname'),
  status: text('status').$type<ServerStatus>().notNull().default('offline'),
  lastSeenAt: ts('last_seen_at'),
  agentVersion: text('agent_version'),
  protocolVersion: integer('protocol_version'),
  os: text('os'),
  arch: text('arch'),
  tools: jsonb('tools').$type<Record<string, string>>().notNull().default({}),
  /** Last heartbeat's load, memory and spool free space. */
  health: jsonb('health').$type<Record<string, unknown> | null>(),
  credentialHash: text('credential_hash'),
  revokedAt: ts('revoked_at'),
  /** The coordinator replica (coordinator_replicas.id) holding the agent's WebSocket; null when none. */
  connectedReplica: text('connected_replica'),
  /** The last upgrade asked of the agent (POST /servers/:id/upgrade) and how it went; null when none. */
  upgrade: jsonb('upgrade').$type<ServerUpgrade | null>(),
  createdAt: createdAt(),
}, (t) => [
  uniqueIndex('servers_credential_uq').on(t.credentialHash),
  // Serves the paged server list (newest first) without reading and sorting every server of the workspace.
  index('servers_workspace_created_idx').on(t.workspaceId, t.createdAt.desc(), t.id.desc()),
])

export interface DestinationTestResult {
  ok: boolean
  latencyMs?: number
  /** sftp: the host key fingerprint the test saw. */
  hostKeyFingerprint?: string
  error?: ErrorData
  at: string
}

export const destinations = pgTable('destinations', {
  id: uuid('id').primaryKey().defaultRandom(),
  workspaceId: uuid('workspace_id').notNull().references(() => workspaces.id),
  name: text('name').notNull(),
  type: text('type').$type<DestinationType>().notNull(),
  config: jsonb('config').$type<Record<string, unknown>>().notNull(),
  credentialsEnc: text('credentials_enc'),
  active: boolean('active').notNull().default(true),
  lastTest: jsonb('last_test').$type<DestinationTestResult | null>(),
  createdAt: createdAt(),
  updatedAt: ts('updated_at').notNull().defaultNow(),
  /** Deleted destinations stay as rows so old backups can still be downloaded and expired. */
  deletedAt: ts('deleted_at'),
}, (t) => [index('destinations_workspace_idx').on(t.workspaceId)])

export const plans = pgTable('plans', {
  id: uuid('id').primaryKey().defaultRandom(),
  workspaceId: uuid('workspace_id').notNull().references(() => workspaces.id),
  name: text('name').notNull(),
  serverId: uuid('server_id').notNull().references(() => servers.id),
  type: text('type').$type<BackupType>().notNull(),
  /** Source without secrets; the database password lives in source_secret_enc. */
  source: jsonb('source').$type<Record<string, unknown>>().notNull(),
  sourceSecretEnc: text('source_secret_enc'),
  destinationId: uuid('destination_id').references(() => destinations.id),
  schedule: text('schedule'),
  timezone: text('timezone').notNull().default('UTC'),
  retentionDays: integer('retention_days').notNull().default(30),
  /** GFS retention (restic `forget --keep-*` semantics, see services/gfs-policy.ts); null = not used, -1 = all. */
  keepDaily: integer('keep_daily'),
  keepWeekly: integer('keep_weekly'),
  keepMonthly: integer('keep_monthly'),
  keepYearly: integer('keep_yearly'),
  keepLocal: boolean('keep_local').notNull(),
  compression: text('compression').$type<Compression>().notNull().default('gzip'),
  encryption: jsonb('encryption').$type<{ recipient: string } | null>(),
  timeoutSeconds: integer('timeout_seconds').notNull().default(21600),
  billingStatus: text('billing_status').$type<BillingStatus>().notNull().default('active'),
  billingFailedAttempts: integer('billing_failed_attempts').notNull().default(0),
  paymentMethodId: uuid('payment_method_id'),
  createdAt: createdAt(),
  updatedAt: ts('updated_at').notNull().defaultNow(),
  deletedAt: ts('deleted_at'),
}, (t) => [
  index('plans_workspace_idx').on(t.workspaceId),
  index('plans_server_idx').on(t.serverId),
])

/** Where retention stands with one copy of a backup. `lost`: its server was revoked, nobody can delete it. */
export type CopyDeletionState = 'pending' | 'deleted' | 'lost'

/**
 * Retention's record on a backup it deletes (services/retention-sweeper.ts). The backup keeps its status
 * (`completed`); `expired_at` is set once no copy is `pending` any more.
 */
export interface BackupDeletion {
  /** Why retention selected it. */
  reason: string
  requestedAt: string
  /** The destination object and its manifest; null when the backup has none. */
  object: CopyDeletionState | null
  /** The spool copy on the server (and its manifest); null when there is none. */
  localCopy: CopyDeletionState | null
  attempts: number
  lastAttemptAt: string | null
  /** Why the last attempt did not finish; cleared when everything is deleted. */
  lastError: ErrorData | null
}

export const backups = pgTable('backups', {
  id: uuid('id').primaryKey().defaultRandom(),
  planId: uuid('plan_id').notNull().references(() => plans.id),
  serverId: uuid('server_id').notNull().references(() => servers.id),
  workspaceId: uuid('workspace_id').notNull().references(() => workspaces.id),
  destinationId: uuid('destination_id').references(() => destinations.id),
  type: text('type').$type<BackupType>().notNull(),
  trigger: text('trigger').$type<Trigger>().notNull(),
  status: text('status').$type<BackupStatus>().notNull().default('pending'),
  offsiteStatus: text('offsite_status').$type<'uploading' | 'uploaded' | 'failed' | null>(),
  sizeBytes: bigint('size_bytes', { mode: 'number' }),
  sha256: text('sha256'),
  localPath: text('local_path'),
  objectKey: text('object_key'),
  /** File name of the archive (what a download is called). */
  fileName: text('file_name').notNull(),
  error: jsonb('error').$type<ErrorData | null>(),
  progress: jsonb('progress').$type<{ bytes: number, bytesPerSecond: number, phase?: string } | null>(),
  details: jsonb('details').$type<Record<string, unknown> | null>(),
  scheduledFor: ts('scheduled_for'),
  cancelRequestedAt: ts('cancel_requested_at'),
  createdAt: createdAt(),
  startedAt: ts('started_at'),
  finishedAt: ts('finished_at'),
  expiresAt: ts('expires_at'),
  /** Set when retention deleted every copy (see `deletion`). */
  expiredAt: ts('expired_at'),
  deletion: jsonb('deletion').$type<BackupDeletion | null>(),
}, (t) => [
  // One row per schedule slot, also across coordinator replicas sharing one PostgreSQL.
  uniqueIndex('backups_plan_slot_uq').on(t.planId, t.scheduledFor),
  index('backups_plan_created_idx').on(t.planId, t.createdAt),
  index('backups_server_status_idx').on(t.serverId, t.status),
  index('backups_workspace_created_idx').on(t.workspaceId, t.createdAt),
  index('backups_open_idx').on(t.status).where(sql`status in ('pending', 'in_progress')`),
  // Retention: completed backups not yet selected for deletion, by expiry; deletions still under way.
  index('backups_retention_idx').on(t.expiresAt).where(sql`status = 'completed' and deletion is null`),
  index('backups_deleting_idx').on(t.planId).where(sql`deletion is not null and expired_at is null`),
])

/** Coordinator processes sharing the database: who holds which agent, and when each was last alive. */
export const coordinatorReplicas = pgTable('coordinator_replicas', {
  id: text('id').primaryKey(),
  hostname: text('hostname').notNull(),
  pid: integer('pid').notNull(),
  startedAt: ts('started_at').notNull(),
  seenAt: ts('seen_at').notNull(),
  stoppedAt: ts('stopped_at'),
})

/** Named leases, so that one replica at a time does a cluster-wide chore (the retention sweep). */
export const leases = pgTable('leases', {
  name: text('name').primaryKey(),
  holder: text('holder').notNull(),
  expiresAt: ts('expires_at').notNull(),
})
/** Connection of a restore's target database server, without its password (restore_secret_enc). */
export interface RestoreConnection {
  engine: 'mysql' | 'postgresql'
  host?: string
  port?: number
  username?: string
  socket?: string
}

/**
 * One restore of a backup onto a target server. Status moves forward like a backup's; the status changes come
 * from the target agent's outbox (job.status frames of kind `restore`).
 */
export const restores = pgTable('restores', {
  id: uuid('id').primaryKey().defaultRandom(),
  workspaceId: uuid('workspace_id').notNull().references(() => workspaces.id),
  backupId: uuid('backup_id').notNull().references(() => backups.id),
  targetServerId: uuid('target_server_id').notNull().references(() => servers.id),
  /** Of a multi-database backup, the one database restored (null: all). */
  sourceDatabase: text('source_database'),
  targetDatabase: text('target_database'),
  targetPath: text('target_path'),
  replaceExisting: boolean('replace_existing').notNull().default(false),
  /** Parts of a full backup restored; a database or files backup has its one part. */
  parts: jsonb('parts').$type<RestorePart[]>().notNull(),
  /** Target database server (null when no database is restored); its password in connection_secret_enc. */
  connection: jsonb('connection').$type<RestoreConnection | null>(),
  connectionSecretEnc: text('connection_secret_enc'),
  timeoutSeconds: integer('timeout_seconds').notNull(),
  status: text('status').$type<RestoreStatus>().notNull().default('pending'),
  error: jsonb('error').$type<ErrorData | null>(),
  progress: jsonb('progress').$type<{ bytes: number, bytesPerSecond: number, phase?: string } | null>(),
  details: jsonb('details').$type<Record<string, unknown> | null>(),
  cancelRequestedAt: ts('cancel_requested_at'),
  createdAt: createdAt(),
  startedAt: ts('started_at'),
  finishedAt: ts('finished_at'),
}, (t) => [
  index('restores_backup_idx').on(t.backupId, t.createdAt),
  index('restores_server_status_idx').on(t.targetServerId, t.status),
  index('restores_workspace_created_idx').on(t.workspaceId, t.createdAt),
  index('restores_open_idx').on(t.status).where(sql`status in ('pending', 'in_progress')`),
])

export type Workspace = typeof workspaces.$inferSelect
export type ApiToken = typeof apiTokens.$inferSelect
export type EnrollmentToken = typeof enrollmentTokens.$inferSelect
export type Server = typeof servers.$inferSelect
export type Destination = typeof destinations.$inferSelect
export type Plan = typeof plans.$inferSelect
export type Backup = typeof backups.$inferSelect
export type CoordinatorReplica = typeof coordinatorReplicas.$inferSelect
export type Restore = typeof restores.$inferSelect
