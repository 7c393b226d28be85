import type { Readable } from 'node:stream'
import type { DestinationType } from '@cloudpilot/protocol'

/**
 * The contract every destination driver fulfils (and the conformance suite in storage/test checks).
 *
 * - `put` publishes atomically: nobody sees a half-written object under its final key; an aborted or failed
 *   put leaves nothing under the final key and cleans up its parts.
 * - Every call takes an AbortSignal; aborting rejects with an AbortError and cleans up.
 * - Failures are CloudPilotError with a code of the destination table: AUTH_FAILED, UNREACHABLE,
 *   CONTAINER_NOT_FOUND, TLS_ERROR, OBJECT_NOT_FOUND (get/stat of a missing key), UPLOAD_FAILED (anything else).
 * - Keys are '/'-separated relative paths; the driver adds the destination's configured prefix.
 */
export interface StorageDriver {
  readonly type: DestinationType
  put (key: string, body: Readable, options?: PutOptions): Promise<PutResult>
  /** Streams the object (or a byte range of it). Rejects OBJECT_NOT_FOUND for a missing key. */
  get (key: string, options?: GetOptions): Promise<Readable>
  /** Metadata of one object, or null when it does not exist. */
  stat (key: string, options?: CallOptions): Promise<ObjectInfo | null>
  /** Deletes the object; deleting a missing key is not an error. */
  delete (key: string, options?: CallOptions): Promise<void>
  /** Lists objects under a key prefix in lexicographic key order, one page at a time. */
  list (prefix: string, options?: ListOptions): Promise<ListPage>
  /** Test Connection: connect, write a small probe object, read it back, delete it. */
  test (options?: CallOptions): Promise<TestResult>
  /** Releases connections. */
  close (): Promise<void>
}

export interface CallOptions {
  signal?: AbortSignal
}

export interface PutOptions extends CallOptions {
  contentType?: string
  /** Expected size when known (lets some drivers pick part sizes); never required. */
  sizeHint?: number
  metadata?: Record<string, string>
}

export interface PutResult {
  key: string
  sizeBytes: number
}

export interface GetOptions extends CallOptions {
  /** Inclusive byte range; `end` omitted means to the end of the object. */
  range?: { start: number, end?: number }
}

export interface ListOptions extends CallOptions {
  /** Opaque cursor from the previous page. */
  cursor?: string | null
  /** Page size (driver may cap it). Default 1000. */
  limit?: number
}

export interface ObjectInfo {
  key: string
  sizeBytes: number
  modifiedAt: Date
}

export interface ListPage {
  items: ObjectInfo[]
  nextCursor: string | null
}

export interface TestResult {
  latencyMs: number
  /**
   * sftp: the fingerprint (`SHA256:...`) of the host key the server presented. With `trustOnFirstUse` the caller
   * should store it as the destination's `hostKeyFingerprint`, so later connections are pinned to it.
   */
  hostKeyFingerprint?: string
}

/** What `openDestination` needs: the destination as stored, credentials decrypted. */
export interface DestinationInput {
  type: DestinationType
  config: Record<string, unknown>
  credentials: Record<string, unknown>
}

export interface OpenOptions {
  /** Allow endpoints on loopback/private addresses (tests, on-premise MinIO). Link-local is always refused. */
  allowPrivateEndpoints?: boolean
  /**
   * Told about problems that do not fail the call but need an operator's eye, e.g. a failed put whose multipart
   * upload could not be aborted (its parts stay billed until a lifecycle rule removes them). Never given secrets.
   */
  onWarning?: (message: string, details: Record<string, unknown>) => void
}
