import type { Backup, Destination, Plan, Restore, Server } from '../db/schema.ts'
import { nextSlot } from '../services/cron-slots.ts'

/** DB rows -> API resource shapes (DESIGN.md §7). Secrets are never part of these shapes. */

const iso = (d: Date | null): string | null => (d === null ? null : d.toISOString())

export function serverBody (s: Server) {
  return {
    id: s.id,
    name: s.name,
    hostname: s.hostname,
    status: s.status,
    lastSeenAt: iso(s.lastSeenAt),
    agentVersion: s.agentVersion,
    os: s.os,
    arch: s.arch,
    tools: s.tools,
    health: s.health ?? null,
    upgrade: s.upgrade === null ? null : { ...s.upgrade, error: s.upgrade.error === null ? null : { code: s.upgrade.error.code, message: s.upgrade.error.message, ...(s.upgrade.error.hint === undefined ? {} : { hint: s.upgrade.error.hint }) } },
    createdAt: s.createdAt.toISOString(),
  }
}

export function destinationBody (d: Destination) {
  return {
    id: d.id,
    name: d.name,
    type: d.type,
    config: d.config,
    active: d.active,
    hasCredentials: d.credentialsEnc !== null,
    lastTest: d.lastTest ?? null,
    createdAt: d.createdAt.toISOString(),
    updatedAt: d.updatedAt.toISOString(),
  }
}

export function planBody (p: Plan) {
  const source: Record<string, unknown> = { ...p.source }
  if (p.type === 'database' || p.type === 'full') {
    const db = (p.type === 'full' ? (source.database as Record<string, unknown>) : source)
    if (db !== undefined) db.hasPassword = p.sourceSecretEnc !== null
  }
  return {
    id: p.id,
    name: p.name,
    serverId: p.serverId,
    type: p.type,
    source,
    destinationId: p.destinationId,
    schedule: p.schedule,
    timezone: p.timezone,
    retentionDays: p.retentionDays,
    keepDaily: p.keepDaily,
    keepWeekly: p.keepWeekly,
    keepMonthly: p.keepMonthly,
    keepYearly: p.keepYearly,
    keepLocal: p.keepLocal,
    compression: p.compression,
    encryption: p.encryption ?? null,
    timeoutSeconds: p.timeoutSeconds,
    billing: { status: p.billingStatus, failedAttempts: p.billingFailedAttempts, paymentMethodId: p.paymentMethodId },
    nextRunAt: p.schedule === null || p.billingStatus !== 'active' || p.deletedAt !== null ? null : iso(nextSlot(p.schedule, p.timezone)),
    createdAt: p.createdAt.toISOString(),
    updatedAt: p.updatedAt.toISOString(),
  }
}

export function backupBody (b: Backup) {
  return {
    id: b.id,
    planId: b.planId,
    serverId: b.serverId,
    destinationId: b.destinationId,
    type: b.type,
    trigger: b.trigger,
    status: b.status,
    offsiteStatus: b.offsiteStatus,
    sizeBytes: b.sizeBytes,
    sha256: b.sha256,
    localPath: b.localPath,
    objectKey: b.objectKey,
    fileName: b.fileName,
    error: b.error == null ? null : withRetryHint(b),
    progress: b.progress ?? null,
    cancelRequested: b.cancelRequestedAt !== null,
    scheduledFor: iso(b.scheduledFor),
    createdAt: b.createdAt.toISOString(),
    startedAt: iso(b.startedAt),
    finishedAt: iso(b.finishedAt),
    expiresAt: iso(b.expiresAt),
    expiredAt: iso(b.expiredAt),
    deletion: b.deletion ?? null,
  }
}

/**
 * Failed runs are never retried silently: a failed row's hint always says how to run the plan again. Hints of the
 * registry that already say it (AGENT_LOST, MISSED) are kept as they are; the others get the call appended.
 */
function withRetryHint (b: Backup): NonNullable<Backup['error']> {
  const error = b.error as NonNullable<Backup['error']>
  if (b.status !== 'failed' || (error.hint ?? '').includes('/run')) return error
  const retry = `Failed runs are not retried automatically: run the plan again with POST /api/v1/plans/${b.planId}/run.`
  return { ...error, hint: error.hint === undefined || error.hint === '' ? retry : `${error.hint} ${retry}` }
}

export function restoreBody (r: Restore) {
  return {
    id: r.id,
    backupId: r.backupId,
    targetServerId: r.targetServerId,
    sourceDatabase: r.sourceDatabase,
    targetDatabase: r.targetDatabase,
    targetPath: r.targetPath,
    replaceExisting: r.replaceExisting,
    parts: r.parts,
    connection: r.connection === null ? null : { ...r.connection, hasPassword: r.connectionSecretEnc !== null },
    timeoutSeconds: r.timeoutSeconds,
    status: r.status,
    error: r.error ?? null,
    progress: r.progress ?? null,
    details: r.details ?? null,
    cancelRequested: r.cancelRequestedAt !== null,
    createdAt: r.createdAt.toISOString(),
    startedAt: iso(r.startedAt),
    finishedAt: iso(r.finishedAt),
  }
}
