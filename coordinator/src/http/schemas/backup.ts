import Type from 'typebox'
import { StringEnum } from '@cloudpilot/protocol'
import { BACKUP_STATUSES, BACKUP_TYPES, OFFSITE_STATUSES, TRIGGERS } from '@cloudpilot/protocol'
import { DateTime, ErrorData, ListQuery, NullableDateTime, Uuid } from './common.ts'

const COPY_DELETION_STATES = ['pending', 'deleted', 'lost'] as const

export const BackupBody = Type.Object({
  id: Uuid,
  planId: Uuid,
  serverId: Uuid,
  destinationId: Type.Union([Uuid, Type.Null()]),
  type: StringEnum(BACKUP_TYPES),
  trigger: StringEnum(TRIGGERS),
  status: StringEnum(BACKUP_STATUSES),
  offsiteStatus: Type.Union([StringEnum(OFFSITE_STATUSES), Type.Null()]),
  sizeBytes: Type.Union([Type.Number(), Type.Null()]),
  sha256: Type.Union([Type.String(), Type.Null()]),
  localPath: Type.Union([Type.String(), Type.Null()]),
  objectKey: Type.Union([Type.String(), Type.Null()]),
  fileName: Type.String(),
  error: Type.Union([ErrorData, Type.Null()]),
  progress: Type.Union([Type.Object({ bytes: Type.Number(), bytesPerSecond: Type.Number(), phase: Type.Optional(Type.String()) }), Type.Null()]),
  cancelRequested: Type.Boolean(),
  scheduledFor: NullableDateTime,
  createdAt: DateTime,
  startedAt: NullableDateTime,
  finishedAt: NullableDateTime,
  expiresAt: NullableDateTime,
  /** When retention deleted every copy of it (status stays completed); null while it exists. */
  expiredAt: NullableDateTime,
  /** What retention did to it: null until retention selects it. */
  deletion: Type.Union([Type.Object({
    reason: Type.String(),
    requestedAt: DateTime,
    /** The destination object and its manifest: pending, deleted, lost (its server was revoked); null: none. */
    object: Type.Union([StringEnum(COPY_DELETION_STATES), Type.Null()]),
    /** The spool copy on the server. */
    localCopy: Type.Union([StringEnum(COPY_DELETION_STATES), Type.Null()]),
    attempts: Type.Integer(),
    lastAttemptAt: NullableDateTime,
    lastError: Type.Union([ErrorData, Type.Null()]),
  }), Type.Null()]),
})

export const BackupListQuery = Type.Object({
  planId: Type.Optional(Uuid),
  serverId: Type.Optional(Uuid),
  status: Type.Optional(StringEnum(BACKUP_STATUSES)),
  /** true: only backups retention deleted; false: only those not (being) deleted. */
  expired: Type.Optional(Type.Boolean()),
  ...ListQuery,
}, { additionalProperties: false })
