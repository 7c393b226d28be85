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
  /** The last upgrade asked of the agent and how it went. */
  upgrade: Type.Union([Type.Object({
    status: Type.Union([Type.Literal('pending'), Type.Literal('in_progress'), Type.Literal('completed'), Type.Literal('failed')]),
    fromVersion: Type.Union([Type.String(), Type.Null()]),
    targetVersion: Type.String(),
    requestedAt: DateTime,
    finishedAt: NullableDateTime,
    error: Type.Union([Type.Object({ code: Type.String(), message: Type.String(), hint: Type.Optional(Type.String()) }), Type.Null()]),
  }), Type.Null()]),
  createdAt: DateTime,
})

export const UpgradeRequest = Type.Object({
  /** Refuse unless the coordinator's package is this version (guards against upgrading to an unexpected build). */
  version: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
}, { additionalProperties: false })

export const UpgradeResult = Type.Object({
  serverId: Uuid,
  /**
   * requested: the agent was sent the upgrade; current: it already runs that version; unreachable: not connected;
   * no_package: no package for the server's architecture.
   */
  outcome: Type.Union([Type.Literal('requested'), Type.Literal('current'), Type.Literal('unreachable'), Type.Literal('no_package')]),
  targetVersion: Type.String(),
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
