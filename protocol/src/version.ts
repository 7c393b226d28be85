/** Wire protocol version. Bump on any incompatible change to a frame; the coordinator refuses a mismatch. */
export const PROTOCOL_VERSION = 1

/** Version of this release of the agent and coordinator (kept in step with the root package.json). */
export const PRODUCT_VERSION = '0.1.0'

/** Largest frame either side accepts, in bytes. Backup data never travels in frames. */
export const MAX_FRAME_BYTES = 1024 * 1024

/** WebSocket close codes used by the coordinator (4000-4999 are application codes). */
export const CloseCode = {
  /** Normal shutdown of the coordinator or agent. */
  GOING_AWAY: 1001,
  /** The agent credential is unknown or was revoked: do not reconnect with it. */
  CREDENTIAL_REJECTED: 4401,
  /** The server was deleted/revoked while connected. */
  SERVER_REVOKED: 4403,
  /** The agent speaks another protocol version. */
  PROTOCOL_MISMATCH: 4409,
  /** A newer connection for the same server replaced this one. */
  REPLACED: 4410,
  /** No hello within the allowed time. */
  HELLO_TIMEOUT: 4408,
} as const

export const SECOND = 1000
export const MINUTE = 60 * SECOND
export const HOUR = 60 * MINUTE
export const DAY = 24 * HOUR
