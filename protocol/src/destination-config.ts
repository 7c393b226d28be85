import Type, { type Static } from 'typebox'

/**
 * Configuration (`config`, readable) and credentials (`credentials`, write-only) of each destination type.
 * The coordinator validates them on create/patch; storage/ drivers receive the same shapes.
 */

/** Optional upload rate limit in bytes per second, applied in the upload stream (every type but local). */
const RateLimit = Type.Optional(Type.Integer({ minimum: 1024 }))

export const LocalConfig = Type.Object({
  /** Absolute directory on the backed-up server (a second disk, an NFS mount). */
  path: Type.String({ minLength: 1, maxLength: 4096, pattern: '^/' }),
}, { additionalProperties: false })

export const S3Config = Type.Object({
  bucket: Type.String({ minLength: 1, maxLength: 255 }),
  region: Type.String({ minLength: 1, maxLength: 64 }),
  endpoint: Type.Optional(Type.String({ minLength: 1, maxLength: 2048 })),
  forcePathStyle: Type.Optional(Type.Boolean()),
  prefix: Type.Optional(Type.String({ maxLength: 1024 })),
  rateLimitBytesPerSecond: RateLimit,
}, { additionalProperties: false })
export const S3Credentials = Type.Object({
  accessKeyId: Type.String({ minLength: 1, maxLength: 256 }),
  secretAccessKey: Type.String({ minLength: 1, maxLength: 512 }),
  sessionToken: Type.Optional(Type.String({ maxLength: 4096 })),
}, { additionalProperties: false })

export const SftpConfig = Type.Object({
  host: Type.String({ minLength: 1, maxLength: 255 }),
  port: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535 })),
  username: Type.String({ minLength: 1, maxLength: 255 }),
  path: Type.String({ minLength: 1, maxLength: 4096 }),
  /** Pinned host key fingerprint, `SHA256:<base64>` as ssh-keygen -lf prints it. */
  hostKeyFingerprint: Type.Optional(Type.String({ maxLength: 128 })),
  /** Explicit opt-in: accept and record the host key seen on first use. */
  trustOnFirstUse: Type.Optional(Type.Boolean()),
  rateLimitBytesPerSecond: RateLimit,
}, { additionalProperties: false })
export const SftpCredentials = Type.Object({
  password: Type.Optional(Type.String({ maxLength: 1024 })),
  privateKey: Type.Optional(Type.String({ maxLength: 16384 })),
  passphrase: Type.Optional(Type.String({ maxLength: 1024 })),
}, { additionalProperties: false })

export const AzureBlobConfig = Type.Object({
  container: Type.String({ minLength: 3, maxLength: 63 }),
  accountUrl: Type.Optional(Type.String({ maxLength: 2048 })),
  prefix: Type.Optional(Type.String({ maxLength: 1024 })),
  rateLimitBytesPerSecond: RateLimit,
}, { additionalProperties: false })
export const AzureBlobCredentials = Type.Object({
  connectionString: Type.Optional(Type.String({ maxLength: 4096 })),
  accountName: Type.Optional(Type.String({ maxLength: 256 })),
  accountKey: Type.Optional(Type.String({ maxLength: 1024 })),
  sasToken: Type.Optional(Type.String({ maxLength: 4096 })),
}, { additionalProperties: false })

export const GcsConfig = Type.Object({
  bucket: Type.String({ minLength: 1, maxLength: 255 }),
  apiEndpoint: Type.Optional(Type.String({ maxLength: 2048 })),
  prefix: Type.Optional(Type.String({ maxLength: 1024 })),
  rateLimitBytesPerSecond: RateLimit,
}, { additionalProperties: false })
export const GcsCredentials = Type.Object({
  serviceAccountJson: Type.String({ minLength: 2, maxLength: 65536 }),
}, { additionalProperties: false })

export const GoogleDriveConfig = Type.Object({
  folderId: Type.String({ minLength: 1, maxLength: 256 }),
  /** Drive API root (default https://www.googleapis.com/); for tests and proxies. */
  rootUrl: Type.Optional(Type.String({ maxLength: 2048 })),
  /** OAuth token endpoint for clientId/clientSecret/refreshToken credentials (default https://oauth2.googleapis.com/token). */
  tokenUrl: Type.Optional(Type.String({ maxLength: 2048 })),
  rateLimitBytesPerSecond: RateLimit,
}, { additionalProperties: false })
export const GoogleDriveCredentials = Type.Object({
  serviceAccountJson: Type.Optional(Type.String({ maxLength: 65536 })),
  clientId: Type.Optional(Type.String({ maxLength: 1024 })),
  clientSecret: Type.Optional(Type.String({ maxLength: 1024 })),
  refreshToken: Type.Optional(Type.String({ maxLength: 4096 })),
}, { additionalProperties: false })

export const CloudinaryConfig = Type.Object({
  cloudName: Type.String({ minLength: 1, maxLength: 256 }),
  folder: Type.Optional(Type.String({ maxLength: 1024 })),
  /** Upload and Admin API root (default https://api.cloudinary.com); for tests and proxies. */
  apiUrl: Type.Optional(Type.String({ maxLength: 2048 })),
  /** Delivery root for downloads (default https://res.cloudinary.com); for tests and private CDNs. */
  deliveryUrl: Type.Optional(Type.String({ maxLength: 2048 })),
  rateLimitBytesPerSecond: RateLimit,
}, { additionalProperties: false })
export const CloudinaryCredentials = Type.Object({
  apiKey: Type.String({ minLength: 1, maxLength: 256 }),
  apiSecret: Type.String({ minLength: 1, maxLength: 256 }),
}, { additionalProperties: false })

export const NoCredentials = Type.Object({}, { additionalProperties: false })

/** Per type: the config schema and the credentials schema. */
export const DESTINATION_SCHEMAS = {
  local: { config: LocalConfig, credentials: NoCredentials },
  s3: { config: S3Config, credentials: S3Credentials },
  sftp: { config: SftpConfig, credentials: SftpCredentials },
  azure_blob: { config: AzureBlobConfig, credentials: AzureBlobCredentials },
  gcs: { config: GcsConfig, credentials: GcsCredentials },
  google_drive: { config: GoogleDriveConfig, credentials: GoogleDriveCredentials },
  cloudinary: { config: CloudinaryConfig, credentials: CloudinaryCredentials },
} as const

export type LocalConfig = Static<typeof LocalConfig>
export type S3Config = Static<typeof S3Config>
export type S3Credentials = Static<typeof S3Credentials>
export type SftpConfig = Static<typeof SftpConfig>
export type SftpCredentials = Static<typeof SftpCredentials>
export type AzureBlobConfig = Static<typeof AzureBlobConfig>
export type AzureBlobCredentials = Static<typeof AzureBlobCredentials>
export type GcsConfig = Static<typeof GcsConfig>
export type GcsCredentials = Static<typeof GcsCredentials>
export type GoogleDriveConfig = Static<typeof GoogleDriveConfig>
export type GoogleDriveCredentials = Static<typeof GoogleDriveCredentials>
export type CloudinaryConfig = Static<typeof CloudinaryConfig>
export type CloudinaryCredentials = Static<typeof CloudinaryCredentials>
