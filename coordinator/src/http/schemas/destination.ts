import Type from 'typebox'
import { StringEnum } from '@cloudpilot/protocol'
import { DESTINATION_TYPES } from '@cloudpilot/protocol'
import { DateTime, ErrorData, Uuid } from './common.ts'

const TypeName = StringEnum(DESTINATION_TYPES)

export const DestinationBody = Type.Object({
  id: Uuid,
  name: Type.String(),
  type: TypeName,
  config: Type.Record(Type.String(), Type.Unknown()),
  active: Type.Boolean(),
  /** Credentials are write-only: only whether some are stored is shown. */
  hasCredentials: Type.Boolean(),
  lastTest: Type.Union([Type.Object({
    ok: Type.Boolean(),
    latencyMs: Type.Optional(Type.Number()),
    hostKeyFingerprint: Type.Optional(Type.String()),
    error: Type.Optional(ErrorData),
    at: DateTime,
  }), Type.Null()]),
  createdAt: DateTime,
  updatedAt: DateTime,
})

/** An S3-compatible provider preset: fills endpoint, region and forcePathStyle of an `s3` config. */
export const S3PresetInput = Type.Object({
  id: Type.Enum(['digitalocean_spaces', 'cloudflare_r2', 'wasabi', 'minio']),
  region: Type.Optional(Type.String({ maxLength: 64 })),
  accountId: Type.Optional(Type.String({ maxLength: 64 })),
  jurisdiction: Type.Optional(Type.String({ maxLength: 16 })),
  endpoint: Type.Optional(Type.String({ maxLength: 2048 })),
}, { additionalProperties: false })

export const CreateDestination = Type.Object({
  name: Type.String({ minLength: 1, maxLength: 200 }),
  type: TypeName,
  /** s3 only: a provider preset (DigitalOcean Spaces, Cloudflare R2, Wasabi, MinIO). */
  preset: Type.Optional(S3PresetInput),
  config: Type.Record(Type.String(), Type.Unknown()),
  credentials: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
  active: Type.Optional(Type.Boolean()),
}, { additionalProperties: false })

export const PatchDestination = Type.Object({
  name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
  config: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
  credentials: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
  active: Type.Optional(Type.Boolean()),
}, { additionalProperties: false })

export const TestResultBody = Type.Object({
  ok: Type.Boolean(),
  latencyMs: Type.Optional(Type.Number()),
  hostKeyFingerprint: Type.Optional(Type.String()),
  error: Type.Optional(ErrorData),
})
