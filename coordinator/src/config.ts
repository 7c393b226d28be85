import path from 'node:path'
import { SECOND } from '@cloudpilot/protocol'

/** Every coordinator option, with its default in one place. `process.env` is read here and nowhere else. */
export interface CoordinatorConfig {
  port: number
  host: string
  dataDir: string
  /** Unset: embedded PGlite under dataDir. */
  databaseUrl: string | null
  masterKey: string | null
  adminToken: string | null
  /** Base URL agents and install commands use; defaults to http://<host>:<port>. */
  publicUrl: string | null
  logLevel: string
  heartbeatIntervalMs: number
  enrollmentTokenTtlSeconds: number
  allowPrivateEndpoints: boolean
  /** How long a dispatched job may stay pending before it is failed as MISSED. */
  startTimeoutMs: number
  /** After a coordinator (re)start, how long agents get to reconnect before any server is declared offline. */
  startupGraceMs: number
  /**
   * Tests and development only: plans may use 6-field cron expressions (seconds first) so that schedules fire
   * within seconds. Production schedules are 5-field (minute resolution).
   */
  scheduleSeconds: boolean
  /** How often every replica re-reads all plans (besides the change notifications): the safety net. */
  scheduleResyncMs: number
  /** A slot found unfired up to this late (e.g. after a restart) still runs; older ones are recorded MISSED. */
  scheduleLateGraceMs: number
  /** After all coordinators were down, slots up to this far back are recorded as MISSED (older: not at all). */
  missedLookbackMs: number
  /** How often the retention sweeper runs. */
  retentionSweepMs: number
  /** Agent packages served at /agent/... (manifest.json + tarballs); built there on first request when empty. */
  agentPackageDir: string
}

export const DEFAULTS: CoordinatorConfig = {
  port: 8080,
  host: '0.0.0.0',
  dataDir: './data',
  databaseUrl: null,
  masterKey: null,
  adminToken: null,
  publicUrl: null,
  logLevel: 'info',
  heartbeatIntervalMs: 15 * SECOND,
  enrollmentTokenTtlSeconds: 3600,
  allowPrivateEndpoints: false,
  startTimeoutMs: 10 * 60 * SECOND,
  // Three heartbeat intervals plus the agents' longest reconnect backoff (60 s).
  startupGraceMs: 3 * 15 * SECOND + 60 * SECOND,
  scheduleSeconds: false,
  scheduleResyncMs: 60 * SECOND,
  scheduleLateGraceMs: 5 * 60 * SECOND,
  missedLookbackMs: 24 * 3600 * SECOND,
  retentionSweepMs: 10 * 60 * SECOND,
  agentPackageDir: './data/agent-packages',
}

function int (value: string | undefined, fallback: number, name: string): number {
  if (value === undefined || value === '') return fallback
  const n = Number(value)
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a non-negative integer, got ${JSON.stringify(value)}`)
  return n
}

function bool (value: string | undefined): boolean {
  return value === '1' || value === 'true' || value === 'yes'
}

function nonEmpty (value: string | undefined): string | null {
  return value === undefined || value === '' ? null : value
}

export function configFromEnv (env: NodeJS.ProcessEnv = process.env): CoordinatorConfig {
  const config: CoordinatorConfig = {
    port: int(env.PORT, DEFAULTS.port, 'PORT'),
    host: env.HOST || DEFAULTS.host,
    dataDir: path.resolve(env.DATA_DIR || DEFAULTS.dataDir),
    databaseUrl: nonEmpty(env.DATABASE_URL),
    masterKey: nonEmpty(env.CLOUDPILOT_MASTER_KEY),
    adminToken: nonEmpty(env.CLOUDPILOT_ADMIN_TOKEN),
    publicUrl: nonEmpty(env.PUBLIC_URL)?.replace(/\/+$/, '') ?? null,
    logLevel: env.LOG_LEVEL || DEFAULTS.logLevel,
    heartbeatIntervalMs: int(env.CLOUDPILOT_HEARTBEAT_INTERVAL_MS, DEFAULTS.heartbeatIntervalMs, 'CLOUDPILOT_HEARTBEAT_INTERVAL_MS'),
    enrollmentTokenTtlSeconds: int(env.CLOUDPILOT_ENROLLMENT_TTL_SECONDS, DEFAULTS.enrollmentTokenTtlSeconds, 'CLOUDPILOT_ENROLLMENT_TTL_SECONDS'),
    allowPrivateEndpoints: bool(env.CLOUDPILOT_ALLOW_PRIVATE_ENDPOINTS),
    startTimeoutMs: int(env.CLOUDPILOT_START_TIMEOUT_SECONDS, DEFAULTS.startTimeoutMs / SECOND, 'CLOUDPILOT_START_TIMEOUT_SECONDS') * SECOND,
    startupGraceMs: DEFAULTS.startupGraceMs,
    scheduleSeconds: bool(env.CLOUDPILOT_SCHEDULE_SECONDS),
    scheduleResyncMs: int(env.CLOUDPILOT_SCHEDULE_RESYNC_SECONDS, DEFAULTS.scheduleResyncMs / SECOND, 'CLOUDPILOT_SCHEDULE_RESYNC_SECONDS') * SECOND,
    scheduleLateGraceMs: int(env.CLOUDPILOT_SCHEDULE_LATE_GRACE_SECONDS, DEFAULTS.scheduleLateGraceMs / SECOND, 'CLOUDPILOT_SCHEDULE_LATE_GRACE_SECONDS') * SECOND,
    missedLookbackMs: int(env.CLOUDPILOT_MISSED_LOOKBACK_HOURS, DEFAULTS.missedLookbackMs / 3600 / SECOND, 'CLOUDPILOT_MISSED_LOOKBACK_HOURS') * 3600 * SECOND,
    agentPackageDir: path.resolve(env.CLOUDPILOT_AGENT_PACKAGE_DIR || path.join(env.DATA_DIR || DEFAULTS.dataDir, 'agent-packages')),
    retentionSweepMs: int(env.CLOUDPILOT_RETENTION_SWEEP_SECONDS, DEFAULTS.retentionSweepMs / SECOND, 'CLOUDPILOT_RETENTION_SWEEP_SECONDS') * SECOND,
  }
  config.startupGraceMs = int(env.CLOUDPILOT_STARTUP_GRACE_SECONDS, (3 * config.heartbeatIntervalMs + 60 * SECOND) / SECOND, 'CLOUDPILOT_STARTUP_GRACE_SECONDS') * SECOND
  if (config.heartbeatIntervalMs < 100) throw new Error('CLOUDPILOT_HEARTBEAT_INTERVAL_MS must be at least 100')
  if (config.scheduleResyncMs < SECOND) throw new Error('CLOUDPILOT_SCHEDULE_RESYNC_SECONDS must be at least 1')
  if (config.retentionSweepMs < SECOND) throw new Error('CLOUDPILOT_RETENTION_SWEEP_SECONDS must be at least 1')
  return config
}
