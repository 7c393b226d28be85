import Type from 'typebox'
import { StringEnum, DATABASE_ENGINES } from '@cloudpilot/protocol'

export const DiscoverRequest = Type.Object({
  engine: StringEnum(DATABASE_ENGINES),
  /** How the server's agent reaches the database server (defaults of the client tools when omitted). */
  connection: Type.Optional(Type.Object({
    host: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
    port: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535 })),
    username: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
    /** Write-only: used for this call, never stored or returned. */
    password: Type.Optional(Type.String({ maxLength: 1024 })),
    socket: Type.Optional(Type.String({ minLength: 1, maxLength: 4096 })),
  }, { additionalProperties: false })),
}, { additionalProperties: false })

export const DiscoverResponse = Type.Object({
  databases: Type.Array(Type.Object({ name: Type.String(), system: Type.Boolean() })),
})
