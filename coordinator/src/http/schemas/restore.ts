import Type from 'typebox'
import { StringEnum, BACKUP_STATUSES, DATABASE_ENGINES, RESTORE_PARTS } from '@cloudpilot/protocol'
import { DateTime, ErrorData, ListQuery, NullableDateTime, Uuid } from './common.ts'

const Nullable = <T extends Parameters<typeof Type.Union>[0][number]>(t: T) => Type.Union([t, Type.Null()])

/** A restore (DESIGN §7 Restore, plus what a restore needs to be understood: parts, connection, progress). */
export const RestoreBody = Type.Object({
  id: Uuid,
  backupId: Uuid,
  targetServerId: Uuid,
  sourceDatabase: Nullable(Type.String()),
  targetDatabase: Nullable(Type.String()),
  targetPath: Nullable(Type.String()),
  replaceExisting: Type.Boolean(),
  parts: Type.Array(StringEnum(RESTORE_PARTS)),
  /** The target database server, without its password (write-only); `hasPassword` says whether one is used. */
  connection: Nullable(Type.Object({
    engine: StringEnum(DATABASE_ENGINES),
    host: Type.Optional(Type.String()),
    port: Type.Optional(Type.Integer()),
    username: Type.Optional(Type.String()),
    socket: Type.Optional(Type.String()),
    hasPassword: Type.Boolean(),
  })),
  timeoutSeconds: Type.Integer(),
  status: StringEnum(BACKUP_STATUSES),
  error: Nullable(ErrorData),
  progress: Nullable(Type.Object({ bytes: Type.Number(), bytesPerSecond: Type.Number(), phase: Type.Optional(Type.String()) })),
  /** What was restored (completed) or whether the target may be partially written (failed, cancelled). */
  details: Nullable(Type.Record(Type.String(), Type.Unknown())),
  cancelRequested: Type.Boolean(),
  createdAt: DateTime,
  startedAt: NullableDateTime,
  finishedAt: NullableDateTime,
})

export const CreateRestore = Type.Object({
  /** Default: the server that made the backup. */
  targetServerId: Type.Optional(Uuid),
  /** New name of the restored database (default: its own name). With several databases, set sourceDatabase too. */
  targetDatabase: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
  /** Restore only this database of a multi-database backup (default: all). */
  sourceDatabase: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
  /** Drop and recreate existing target databases, write over existing files (default false: DATABASE_EXISTS / TARGET_NOT_EMPTY). */
  replaceExisting: Type.Optional(Type.Boolean()),
  /** Absolute directory on the target server for the files (files and full backups). */
  targetPath: Type.Optional(Type.String({ minLength: 1, maxLength: 4096 })),
  /** Of a full backup, what to restore (default both). */
  parts: Type.Optional(Type.Array(StringEnum(RESTORE_PARTS), { minItems: 1, maxItems: 2 })),
  /** Target database server; each field defaults to the plan's source connection. The password is write-only. */
  connection: Type.Optional(Type.Object({
    host: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
    port: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535 })),
    username: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
    password: Type.Optional(Type.String({ maxLength: 1024 })),
    socket: Type.Optional(Type.String({ minLength: 1, maxLength: 4096 })),
  }, { additionalProperties: false })),
  /** Default: the plan's timeoutSeconds. */
  timeoutSeconds: Type.Optional(Type.Integer({ minimum: 10, maximum: 7 * 24 * 3600 })),
}, { additionalProperties: false })

export const RestoreListQuery = Type.Object({
  backupId: Type.Optional(Uuid),
  targetServerId: Type.Optional(Uuid),
  status: Type.Optional(StringEnum(BACKUP_STATUSES)),
  ...ListQuery,
}, { additionalProperties: false })
