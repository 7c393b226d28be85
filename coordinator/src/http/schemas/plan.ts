import Type from 'typebox'
import { StringEnum } from '@cloudpilot/protocol'
import { BACKUP_TYPES, BILLING_STATUSES, COMPRESSIONS } from '@cloudpilot/protocol'
import { DateTime, NullableDateTime, Uuid } from './common.ts'

/** A GFS count: periods to keep one backup of (restic --keep-* semantics); -1 all; 0 or null off. */
const KeepCount = Type.Union([Type.Integer({ minimum: -1, maximum: 100000 }), Type.Null()])

const Encryption = Type.Union([Type.Object({ recipient: Type.String({ pattern: '^age1[0-9a-z]{58}$' }) }, { additionalProperties: false }), Type.Null()])

export const PlanBody = Type.Object({
  id: Uuid,
  name: Type.String(),
  serverId: Uuid,
  type: StringEnum(BACKUP_TYPES),
  /** The source without its password (write-only); `hasPassword` says whether one is stored. */
  source: Type.Record(Type.String(), Type.Unknown()),
  destinationId: Type.Union([Uuid, Type.Null()]),
  schedule: Type.Union([Type.String(), Type.Null()]),
  timezone: Type.String(),
  retentionDays: Type.Integer(),
  keepDaily: Type.Union([Type.Integer(), Type.Null()]),
  keepWeekly: Type.Union([Type.Integer(), Type.Null()]),
  keepMonthly: Type.Union([Type.Integer(), Type.Null()]),
  keepYearly: Type.Union([Type.Integer(), Type.Null()]),
  keepLocal: Type.Boolean(),
  compression: StringEnum(COMPRESSIONS),
  encryption: Encryption,
  timeoutSeconds: Type.Integer(),
  billing: Type.Object({
    status: StringEnum(BILLING_STATUSES),
    failedAttempts: Type.Integer(),
    paymentMethodId: Type.Union([Uuid, Type.Null()]),
  }),
  /** When the schedule fires next (null: no schedule, or billing not active). */
  nextRunAt: NullableDateTime,
  createdAt: DateTime,
  updatedAt: DateTime,
})

const planFields = {
  name: Type.String({ minLength: 1, maxLength: 200 }),
  source: Type.Record(Type.String(), Type.Unknown()),
  destinationId: Type.Union([Uuid, Type.Null()]),
  schedule: Type.Union([Type.String({ minLength: 9, maxLength: 200 }), Type.Null()]),
  timezone: Type.String({ minLength: 1, maxLength: 64 }),
  retentionDays: Type.Integer({ minimum: 1, maximum: 36500 }),
  keepDaily: KeepCount,
  keepWeekly: KeepCount,
  keepMonthly: KeepCount,
  keepYearly: KeepCount,
  keepLocal: Type.Boolean(),
  compression: StringEnum(COMPRESSIONS),
  encryption: Encryption,
  timeoutSeconds: Type.Integer({ minimum: 10, maximum: 7 * 24 * 3600 }),
}

export const CreatePlan = Type.Object({
  name: planFields.name,
  serverId: Uuid,
  type: StringEnum(BACKUP_TYPES),
  source: planFields.source,
  destinationId: Type.Optional(planFields.destinationId),
  schedule: Type.Optional(planFields.schedule),
  timezone: Type.Optional(planFields.timezone),
  retentionDays: Type.Optional(planFields.retentionDays),
  keepDaily: Type.Optional(planFields.keepDaily),
  keepWeekly: Type.Optional(planFields.keepWeekly),
  keepMonthly: Type.Optional(planFields.keepMonthly),
  keepYearly: Type.Optional(planFields.keepYearly),
  keepLocal: Type.Optional(planFields.keepLocal),
  compression: Type.Optional(planFields.compression),
  encryption: Type.Optional(planFields.encryption),
  timeoutSeconds: Type.Optional(planFields.timeoutSeconds),
}, { additionalProperties: false })

export const PatchPlan = Type.Object({
  name: Type.Optional(planFields.name),
  source: Type.Optional(planFields.source),
  destinationId: Type.Optional(planFields.destinationId),
  schedule: Type.Optional(planFields.schedule),
  timezone: Type.Optional(planFields.timezone),
  retentionDays: Type.Optional(planFields.retentionDays),
  keepDaily: Type.Optional(planFields.keepDaily),
  keepWeekly: Type.Optional(planFields.keepWeekly),
  keepMonthly: Type.Optional(planFields.keepMonthly),
  keepYearly: Type.Optional(planFields.keepYearly),
  keepLocal: Type.Optional(planFields.keepLocal),
  compression: Type.Optional(planFields.compression),
  encryption: Type.Optional(planFields.encryption),
  timeoutSeconds: Type.Optional(planFields.timeoutSeconds),
}, { additionalProperties: false })

const previewItem = {
  backupId: Uuid,
  createdAt: DateTime,
  expiresAt: NullableDateTime,
  sizeBytes: Type.Union([Type.Number(), Type.Null()]),
}

/** GET /plans/:id/retention-preview: what the next sweep would delete, what it keeps and why. */
export const RetentionPreviewBody = Type.Object({
  planId: Uuid,
  at: DateTime,
  policy: Type.Object({
    retentionDays: Type.Integer(),
    keepDaily: Type.Union([Type.Integer(), Type.Null()]),
    keepWeekly: Type.Union([Type.Integer(), Type.Null()]),
    keepMonthly: Type.Union([Type.Integer(), Type.Null()]),
    keepYearly: Type.Union([Type.Integer(), Type.Null()]),
    timezone: Type.String(),
  }),
  /** Completed backups the next sweep deletes. */
  delete: Type.Array(Type.Object({ ...previewItem, reason: Type.String() })),
  /** Completed backups it keeps, each with its reasons (newest, retentionDays, daily, weekly, monthly, yearly). */
  keep: Type.Array(Type.Object({ ...previewItem, reasons: Type.Array(Type.String()), why: Type.String() })),
  /** Backups already selected whose copies are still being deleted. */
  deleting: Type.Array(Type.Object({ ...previewItem, lastError: Type.Union([Type.Object({ code: Type.String(), message: Type.String(), hint: Type.Optional(Type.String()) }), Type.Null()]) })),
})
