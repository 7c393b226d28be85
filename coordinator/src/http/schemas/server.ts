import Type from 'typebox'
import { StringEnum } from '@cloudpilot/protocol'
import { SERVER_STATUSES } from '@cloudpilot/protocol'
import { DateTime, NullableDateTime, Uuid } from './common.ts'

export const ServerBody = Type.Object({
  id: Uuid,
  name: Type.String(),
  hostname: Type.Union([Type.String(), Type.Null()]),
  status: StringEnum(SERVER_STATUSES),
  lastSeenAt: NullableDateTime,
  agentVersion: Type.Union([Type.String(), Type.Null()]),
  os: Type.Union([Type.String(), Type.Null()]),
  arch: Type.Union([Type.String(), Type.Null()]),
  tools: Type.Record(Type.String(), Type.String()),
  health: Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()]),
  createdAt: DateTime,
})

export const EnrollmentTokenRequest = Type.Object({
  name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
  expiresInSeconds: Type.Optional(Type.Integer({ minimum: 1, maximum: 7 * 24 * 3600 })),
}, { additionalProperties: false })

export const EnrollmentTokenBody = Type.Object({
  token: Type.String(),
  expiresAt: DateTime,
  installCommand: Type.String(),
})

export const EnrollRequest = Type.Object({
  token: Type.String({ minLength: 10, maxLength: 200 }),
  hostname: Type.Optional(Type.String({ maxLength: 255 })),
}, { additionalProperties: false })

export const EnrollResponse = Type.Object({
  serverId: Uuid,
  agentCredential: Type.String(),
})
