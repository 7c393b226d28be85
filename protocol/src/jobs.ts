import Type, { type Static } from 'typebox'
import { StringEnum, Uuid, IsoTime } from './schema-helpers.ts'
import { BACKUP_TYPES, COMPRESSIONS, DATABASE_ENGINES, DESTINATION_TYPES } from './vocabulary.ts'
import { AbsolutePath, DatabaseConnection, DatabaseName, DatabaseSource, FilesSource, FullSource, SnapshotSource } from './sources.ts'

/** A destination as the agent receives it: type, config and decrypted credentials (never logged). */
export const DestinationSpec = Type.Object({
  id: Uuid,
  type: StringEnum(DESTINATION_TYPES),
  config: Type.Record(Type.String(), Type.Unknown()),
  credentials: Type.Record(Type.String(), Type.Unknown()),
  /** The coordinator operator's SSRF policy (CLOUDPILOT_ALLOW_PRIVATE_ENDPOINTS), applied by the agent too. */
  allowPrivateEndpoints: Type.Optional(Type.Boolean()),
})

export const EncryptionSpec = Type.Object({
  /** age X25519 recipient (public key), `age1…`. */
  recipient: Type.String({ pattern: '^age1[0-9a-z]{58}$' }),
}, { additionalProperties: false })

export const BackupJob = Type.Object({
  kind: Type.Literal('backup'),
  jobId: Uuid,
  planId: Uuid,
  serverId: Uuid,
  type: StringEnum(BACKUP_TYPES),
  source: Type.Union([DatabaseSource, FilesSource, FullSource, SnapshotSource]),
  compression: StringEnum(COMPRESSIONS),
  encryption: Type.Union([EncryptionSpec, Type.Null()]),
  keepLocal: Type.Boolean(),
  destination: Type.Union([DestinationSpec, Type.Null()]),
  /** Key under the destination (coordinator-chosen, ids only). */
  objectKey: Type.String({ minLength: 1, maxLength: 1024 }),
  timeoutSeconds: Type.Integer({ minimum: 1 }),
  createdAt: IsoTime,
})

/**
 * A restore, as the target server's agent receives it. The agent fetches the archive itself (from the
 * destination, or from its own spool when it made the backup): backup bytes never cross the coordinator.
 * `database` null means no database is restored; `targetPath` null means no files are restored.
 */
export const RestoreJob = Type.Object({
  kind: Type.Literal('restore'),
  /** The restore's id. */
  jobId: Uuid,
  backupId: Uuid,
  /** The target server (the agent running the job). */
  serverId: Uuid,
  /** What was backed up, as recorded when the backup completed. */
  backup: Type.Object({
    type: StringEnum(BACKUP_TYPES),
    compression: StringEnum(COMPRESSIONS),
    encrypted: Type.Boolean(),
    sha256: Type.String({ pattern: '^[0-9a-f]{64}$' }),
    sizeBytes: Type.Integer({ minimum: 1 }),
    engine: Type.Union([StringEnum(DATABASE_ENGINES), Type.Null()]),
    databases: Type.Array(DatabaseName, { maxItems: 256 }),
  }),
  /** Where the archive is: the spool copy (only when the target made the backup) and/or a destination object. */
  archive: Type.Object({
    localPath: Type.Union([Type.String({ maxLength: 4096 }), Type.Null()]),
    objectKey: Type.Union([Type.String({ minLength: 1, maxLength: 1024 }), Type.Null()]),
    destination: Type.Union([DestinationSpec, Type.Null()]),
  }),
  database: Type.Union([Type.Object({
    /** Connection of the target database server (password decrypted; never logged). */
    connection: DatabaseConnection,
    /** One database of a multi-database backup, or null for all of them. */
    sourceDatabase: Type.Union([DatabaseName, Type.Null()]),
    /** New name for the (one) restored database, or null to keep the name it had. */
    targetDatabase: Type.Union([DatabaseName, Type.Null()]),
  }), Type.Null()]),
  targetPath: Type.Union([AbsolutePath, Type.Null()]),
  /** Drop and recreate existing target databases / write over existing files. */
  replaceExisting: Type.Boolean(),
  timeoutSeconds: Type.Integer({ minimum: 1 }),
  createdAt: IsoTime,
})

export const JobSpec = Type.Union([BackupJob, RestoreJob])

export type DestinationSpec = Static<typeof DestinationSpec>
export type EncryptionSpec = Static<typeof EncryptionSpec>
export type BackupJob = Static<typeof BackupJob>
export type RestoreJob = Static<typeof RestoreJob>
export type JobSpec = Static<typeof JobSpec>
