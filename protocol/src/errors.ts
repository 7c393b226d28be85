/**
 * The one error registry of the product. Codes are stable: branch on `code`, never on `message`.
 * A retired code is never reused. Every code has a default message and a hint that says what to do next;
 * a thrower may give a more specific message or hint (for example naming the database or the grant).
 *
 * The codes and hints follow the troubleshooting tables documented in README.md ("Error codes").
 */

export interface ErrorDefinition {
  /** HTTP status when the error answers an API call. */
  readonly status: number
  readonly message: string
  readonly hint: string
  /** Whether the same operation may succeed if simply retried later. */
  readonly retryable: boolean
}

function def (status: number, message: string, hint: string, retryable = false): ErrorDefinition {
  return { status, message, hint, retryable }
}

export const ERRORS = {
  // --- API and authentication -------------------------------------------------------------------------
  UNAUTHORIZED: def(401, 'Missing or invalid API token.', 'Send "Authorization: Bearer <api token>". The first start of the coordinator prints the admin token and writes it to DATA_DIR/admin-token.'),
  FORBIDDEN: def(403, 'This token may not do that.', 'Use a token of the workspace that owns the resource.'),
  NOT_FOUND: def(404, 'No such resource.', 'Check the id; list the collection to see what exists.'),
  VALIDATION_FAILED: def(400, 'The request is not valid.', 'Fix the fields named in the message and send it again.'),
  CONFLICT: def(409, 'The resource is in a state that does not allow this.', 'Read the resource again and retry with its current state.'),
  NOT_CANCELLABLE: def(409, 'Only pending or in_progress backups and restores can be cancelled.', 'Nothing to do: the job has already finished.'),
  RESOURCE_IN_USE: def(409, 'The resource is still used by others.', 'Delete or change the plans that use it first.'),
  INTERNAL: def(500, 'Internal error.', 'Retry; if it persists, check the coordinator log for the request id.', true),
  PAYLOAD_TOO_LARGE: def(413, 'Request body too large.', 'Send a smaller body.'),

  // --- Enrollment and agent connection ----------------------------------------------------------------
  ENROLLMENT_TOKEN_INVALID: def(401, 'The enrollment token is unknown.', 'Create a new one with POST /api/v1/enrollment-tokens and run the install command again.'),
  ENROLLMENT_TOKEN_EXPIRED: def(401, 'The enrollment token has expired.', 'Enrollment tokens are valid for a short time (1 h by default): create a new one.'),
  ENROLLMENT_TOKEN_USED: def(401, 'The enrollment token was already used.', 'Enrollment tokens are single-use: create a new one for each server.'),
  AGENT_CREDENTIAL_INVALID: def(401, 'The agent credential is unknown or was revoked.', 'Enroll the server again with a new enrollment token.'),
  PROTOCOL_MISMATCH: def(400, 'The agent speaks a different protocol version than the coordinator.', 'Upgrade the agent to the coordinator\'s version (re-run the install command).'),
  AGENT_UNREACHABLE: def(503, 'The server\'s agent is not connected.', 'Check that the agent runs on the server (systemctl status cloudpilot-agent) and can reach the coordinator.', true),
  AGENT_TIMEOUT: def(504, 'The agent did not answer in time.', 'The server may be overloaded or the connection slow; retry.', true),
  AGENT_PACKAGE_UNAVAILABLE: def(503, 'The coordinator has no agent package to serve.', 'Build it on the coordinator: npx node deploy/scripts/build-agent-package.ts --out <CLOUDPILOT_AGENT_PACKAGE_DIR> (the coordinator log says why building it on demand failed).', true),
  UPGRADE_FAILED: def(500, 'The agent could not upgrade; it keeps running the version it had.', 'Read the message (download, checksum, or the new version not starting, which is rolled back); fix the cause and upgrade again, or re-run the install command on the server.', true),

  // --- Wire protocol ----------------------------------------------------------------------------------
  FRAME_INVALID: def(400, 'The frame is not valid JSON or does not match its schema.', 'Peers must send frames of the protocol version announced in hello.'),
  FRAME_TOO_LARGE: def(413, 'The frame is larger than the protocol allows.', 'Frames carry control data only; backup bytes travel over separate transfers.'),
  FRAME_UNKNOWN_TYPE: def(400, 'Unknown frame type.', 'Upgrade the older side so both speak the same protocol version.'),

  // --- Destinations -----------------------------------------------------------------------------------
  AUTH_FAILED: def(400, 'The destination rejected the credentials.', 'Re-enter the credentials and check for trailing spaces; make sure the key is active and allowed to write.'),
  UNREACHABLE: def(400, 'The destination could not be reached (connection refused or timed out).', 'Check the host and port, firewalls and VPNs between the server and the destination.', true),
  CONTAINER_NOT_FOUND: def(400, 'The bucket, container or folder does not exist, or the credentials may not list it.', 'Create it, fix its name, or grant list permission to these credentials.'),
  TLS_ERROR: def(400, 'TLS negotiation with the destination failed (certificate or TLS version).', 'Check the endpoint URL and its certificate; use the provider\'s documented endpoint.'),
  DESTINATION_INACTIVE: def(409, 'The destination is marked inactive.', 'Activate it (PATCH active: true) or point the plan at another destination.'),
  DESTINATION_TYPE_NOT_GRANTED: def(403, 'This workspace may not use that destination type.', 'Ask your admin to enable it for the workspace.'),
  ENDPOINT_NOT_ALLOWED: def(400, 'The endpoint resolves to an address that is not allowed.', 'Link-local and metadata addresses are always refused; loopback and private ranges only with CLOUDPILOT_ALLOW_PRIVATE_ENDPOINTS=1.'),
  OBJECT_NOT_FOUND: def(404, 'The object does not exist at the destination.', 'It may have been deleted by retention or by hand; pick another backup.'),

  // --- Discovery --------------------------------------------------------------------------------------
  ACCESS_DENIED: def(400, 'The database server refused the user or password.', 'Check the username and password; the backup user needs SELECT, SHOW VIEW, TRIGGER, LOCK TABLES and EVENT (MySQL) or CONNECT and SELECT on every table (PostgreSQL).'),
  CLIENT_MISSING: def(400, 'The database client tools are not installed on the server.', 'Install them on the server: apt-get install mariadb-client (MySQL/MariaDB) or postgresql-client (PostgreSQL).'),
  NO_DATABASES: def(404, 'The database server has no user databases visible to this user.', 'Create a database, or grant this user access to the ones that exist.'),

  // --- Backups ----------------------------------------------------------------------------------------
  SOURCE_UNREACHABLE: def(400, 'The database server could not be reached.', 'Check host and port and that the database server is running and listens there (from the backed-up server, not from the coordinator).', true),
  SOURCE_NOT_FOUND: def(400, 'The database or path to back up does not exist.', 'Fix the plan\'s database names or paths (POST /api/v1/servers/:id/discover-databases lists the databases).'),
  DUMP_FAILED: def(500, 'The dump tool failed.', 'Read the message for the tool\'s own error; run the same dump by hand on the server to reproduce.'),
  NO_SPACE: def(507, 'No space left on the device.', 'Free disk space on the server or turn off keepLocal so the archive streams straight to the destination.'),
  UPLOAD_FAILED: def(502, 'The upload to the destination failed.', 'Run Test Connection on the destination (POST /api/v1/destinations/:id/test) and fix what it reports.', true),
  TIMEOUT: def(504, 'The backup ran longer than the plan\'s timeoutSeconds.', 'Raise timeoutSeconds on the plan, or back up fewer/lighter databases per plan; check the server\'s load.', true),
  AGENT_LOST: def(503, 'The agent stopped or lost its connection while the job was pending or running.', 'Check the agent on the server (systemctl status cloudpilot-agent, journalctl -u cloudpilot-agent), then run the plan again: POST /api/v1/plans/:id/run.', true),
  MISSED: def(503, 'The scheduled run did not start.', 'The agent never started the job; check that it is online, then run the plan again: POST /api/v1/plans/:id/run.', true),
  SKIPPED_OVERLAP: def(409, 'Skipped: the previous run of this plan was still running.', 'Lengthen the schedule interval or speed up the backup; nothing was lost, the running backup continues.'),
  PERMISSION_DENIED: def(400, 'The agent may not read a file or directory.', 'Give the cloudpilot user read access (group membership or ACL, see README "Read access"), or exclude the path.'),
  ENCRYPTION_UNAVAILABLE: def(400, 'Encryption is configured but cannot be applied.', 'Fix the plan\'s encryption recipient (an age1… X25519 public key); backups are never written unencrypted when encryption is configured.'),
  VERIFY_FAILED: def(500, 'The uploaded object does not match what was sent.', 'The destination stored something other than the archive; run the plan again and check the destination.', true),
  BILLING_INACTIVE: def(402, 'The plan\'s billing status is not active.', 'Update the payment method (PUT /api/v1/plans/:id/billing) to re-activate the plan.'),
  CANCELLED: def(409, 'The job was cancelled.', 'Run the plan again when needed.'),
  UNSUPPORTED: def(400, 'This agent or coordinator does not support that yet.', 'Upgrade the agent and coordinator to the latest version.'),

  // --- Restores ---------------------------------------------------------------------------------------
  SOURCE_NOT_COMPLETED: def(409, 'Only completed backups can be restored.', 'Pick a backup whose status is completed.'),
  TARGET_UNREACHABLE: def(400, 'The restore target could not be reached.', 'Check the target server\'s agent and database server.', true),
  DATABASE_EXISTS: def(409, 'The target database already exists.', 'Set replaceExisting: true to overwrite it, or pick a new targetDatabase name.'),
  INSUFFICIENT_PRIVILEGES: def(400, 'The database user may not create or write the target.', 'Grant CREATE (and DROP when replacing) to the restore user, or restore as an administrative user.'),
  DOWNLOAD_FAILED: def(502, 'The archive could not be downloaded from the destination.', 'Run Test Connection on the destination and check that the object still exists.', true),
  CHECKSUM_MISMATCH: def(422, 'The archive\'s sha256 does not match the one recorded at backup time.', 'The stored object is damaged or was replaced; nothing was written to the target. Restore another backup.'),
  RESTORE_FAILED: def(500, 'The restore tool failed while writing the target.', 'Read the message for the tool\'s own error; the target may be partially written (the error says what to clean up). Fix the cause and restore again, with replaceExisting: true or into a new name.'),
  TARGET_NOT_EMPTY: def(409, 'The target path exists and is not empty.', 'Set replaceExisting: true to write over the files there, or pick an empty or new targetPath.'),
  ARCHIVE_NOT_REACHABLE: def(409, 'The target server cannot reach the backup\'s archive: it is stored only on the server that made it.', 'Restore it onto the server that made it, or back up to an offsite destination; backup bytes never travel through the coordinator (download the archive with GET /api/v1/backups/:id/download to move it by hand).'),
  UNSAFE_ARCHIVE_ENTRY: def(422, 'The archive holds an entry that would be written outside the target path.', 'The archive was not made by CloudPilot or was tampered with; nothing outside the target path was written.'),
} as const satisfies Record<string, ErrorDefinition>

export type ErrorCode = keyof typeof ERRORS

export const ERROR_CODES = Object.keys(ERRORS) as ErrorCode[]

export function isErrorCode (value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.hasOwn(ERRORS, value)
}

/** A failure as data: what travels on the wire and is stored on a failed row. */
export interface ErrorData {
  code: ErrorCode
  message: string
  hint?: string
  retryable?: boolean
}

export class CloudPilotError extends Error {
  readonly code: ErrorCode
  readonly hint: string
  readonly status: number
  readonly retryable: boolean

  constructor (code: ErrorCode, message?: string, options?: { hint?: string, cause?: unknown, retryable?: boolean }) {
    const definition = ERRORS[code]
    super(message ?? definition.message, options?.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'CloudPilotError'
    this.code = code
    this.hint = options?.hint ?? definition.hint
    this.status = definition.status
    this.retryable = options?.retryable ?? definition.retryable
  }

  toData (): ErrorData {
    return { code: this.code, message: this.message, hint: this.hint, retryable: this.retryable }
  }

  static fromData (data: ErrorData): CloudPilotError {
    const code = isErrorCode(data.code) ? data.code : 'INTERNAL'
    const options: { hint?: string, retryable?: boolean } = {}
    if (data.hint !== undefined) options.hint = data.hint
    if (data.retryable !== undefined) options.retryable = data.retryable
    return new CloudPilotError(code, data.message, options)
  }
}

/** Any thrown value as error data; unknown errors become INTERNAL with their message. */
export function toErrorData (err: unknown, fallback: ErrorCode = 'INTERNAL'): ErrorData {
  if (err instanceof CloudPilotError) return err.toData()
  if (typeof err === 'object' && err !== null && isErrorCode((err as { code?: unknown }).code)) {
    const e = err as { code: ErrorCode, message?: string, hint?: string }
    return new CloudPilotError(e.code, e.message, e.hint === undefined ? undefined : { hint: e.hint }).toData()
  }
  const message = err instanceof Error ? err.message : String(err)
  return new CloudPilotError(fallback, message).toData()
}

/** Error data received from a peer: an unknown code (newer peer) becomes INTERNAL, keeping the message. */
export function normaliseErrorData (data: { code: string, message: string, hint?: string, retryable?: boolean }): ErrorData {
  const code = isErrorCode(data.code) ? data.code : 'INTERNAL'
  const out: ErrorData = { code, message: code === data.code ? data.message : `${data.code}: ${data.message}` }
  out.hint = data.hint ?? ERRORS[code].hint
  if (data.retryable !== undefined) out.retryable = data.retryable
  return out
}
