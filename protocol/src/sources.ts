import Type, { type Static } from 'typebox'
import { StringEnum } from './schema-helpers.ts'
import { DATABASE_ENGINES } from './vocabulary.ts'

/** A database name: any characters but NUL. Names are always passed as data, never as options or conninfo. */
export const DatabaseName = Type.String({ minLength: 1, maxLength: 255, pattern: '^[^\\u0000]+$' })

/** Where and how to reach the database server (from the backed-up server's point of view). */
export const DatabaseConnection = Type.Object({
  engine: StringEnum(DATABASE_ENGINES),
  host: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
  port: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535 })),
  username: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
  /** Write-only in the API; travels to the agent only inside job.run / discover over TLS. */
  password: Type.Optional(Type.String({ maxLength: 1024 })),
  /** Unix socket directory (PostgreSQL) or socket file (MySQL) instead of host/port. */
  socket: Type.Optional(Type.String({ minLength: 1, maxLength: 4096 })),
}, { additionalProperties: false })

export const DatabaseSource = Type.Object({
  ...DatabaseConnection.properties,
  databases: Type.Array(DatabaseName, { minItems: 1, maxItems: 256 }),
}, { additionalProperties: false })

export const AbsolutePath = Type.String({ minLength: 1, maxLength: 4096, pattern: '^/[^\\u0000]*$' })

export const FilesSource = Type.Object({
  paths: Type.Array(AbsolutePath, { minItems: 1, maxItems: 256 }),
  exclude: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 1024 }), { maxItems: 1024 })),
}, { additionalProperties: false })

export const FullSource = Type.Object({
  paths: Type.Array(AbsolutePath, { minItems: 1, maxItems: 256 }),
  exclude: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 1024 }), { maxItems: 1024 })),
  database: DatabaseSource,
}, { additionalProperties: false })

export const SnapshotSource = Type.Object({
  provider: Type.String({ minLength: 1, maxLength: 64 }),
  volumeId: Type.Optional(Type.String({ maxLength: 256 })),
}, { additionalProperties: true })

export type DatabaseConnection = Static<typeof DatabaseConnection>
export type DatabaseSource = Static<typeof DatabaseSource>
export type FilesSource = Static<typeof FilesSource>
export type FullSource = Static<typeof FullSource>
export type SnapshotSource = Static<typeof SnapshotSource>
