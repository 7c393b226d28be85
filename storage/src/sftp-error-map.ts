import { CloudPilotError, type ErrorCode } from '@cloudpilot/protocol'
import { isAbortError, networkErrorCode } from './node-error-map.ts'
import { redact } from './redact.ts'

/**
 * ssh2 / SFTP failures mapped onto the destination troubleshooting table. ssh2 marks connection failures with a
 * `level` ('client-socket', 'client-timeout', 'client-authentication', 'handshake', 'protocol'); SFTP requests
 * fail with an SFTP status code (draft-ietf-secsh-filexfer-02 §7): 2 no such file, 3 permission denied,
 * 4 failure (OpenSSH's answer for anything else, a full disk included), 6/7 no or lost connection.
 *
 * SFTP runs over SSH, not TLS: TLS_ERROR never comes from this driver. A host key that does not match the pinned
 * fingerprint is AUTH_FAILED (authentication of the server, refused before any credential is sent) with a hint
 * of its own; see sftp.ts.
 */

export type SftpOperation = 'connect' | 'put' | 'get' | 'stat' | 'delete' | 'list' | 'test'

export interface SftpErrorContext {
  op: SftpOperation
  /** user@host:port */
  where: string
  /** Remote path concerned, if any. */
  path?: string
  /** Values that must never appear in a message (password, passphrase). */
  secrets: readonly string[]
}

const SFTP_NO_SUCH_FILE = 2
const SFTP_PERMISSION_DENIED = 3
const SFTP_FAILURE = 4
const SFTP_NO_CONNECTION = 6
const SFTP_CONNECTION_LOST = 7
const SFTP_OP_UNSUPPORTED = 8

export const SFTP_AUTH_HINT = 'Re-enter the password (or the private key, with its passphrase if it has one) and check for trailing spaces; check the username and that the server allows this authentication method for it.'
export const SFTP_PERMISSION_HINT = 'The SSH user may not do this: give it write access to the destination path (and read access to the files there).'

/** Whether the connection under a request is gone (reconnect and retry idempotent requests). */
export function isConnectionLoss (err: unknown): boolean {
  const e = err as { code?: unknown, message?: unknown, level?: unknown } | null
  if (e === null || typeof e !== 'object') return false
  if (e.code === SFTP_NO_CONNECTION || e.code === SFTP_CONNECTION_LOST) return true
  const message = typeof e.message === 'string' ? e.message : ''
  return /No response from server|Not connected|No SFTP connection|Channel not open|Unable to start subsystem|connection (?:lost|closed)/i.test(message) ||
    networkErrorCode(err) === 'UNREACHABLE'
}

export function sftpStatusOf (err: unknown): number | undefined {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'number' ? code : undefined
}

export function mapSftpError (err: unknown, ctx: SftpErrorContext): Error {
  if (isAbortError(err)) return err as Error
  if (err instanceof CloudPilotError) return err
  const where = ctx.path === undefined ? ctx.where : `${ctx.where}:${ctx.path}`
  const raw = err instanceof Error ? err.message : String(err)
  const detail = redact(raw.replace(/^(?:getConnection|_put|put|connect): /, ''), ctx.secrets)
  const make = (code: ErrorCode, message: string, options: { hint?: string, retryable?: boolean } = {}): CloudPilotError =>
    new CloudPilotError(code, redact(message, ctx.secrets), { cause: err, ...options })
  const level = (err as { level?: unknown } | null)?.level
  const status = sftpStatusOf(err)

  if (/Cannot parse privateKey|no passphrase given|bad passphrase/i.test(raw)) {
    return make('AUTH_FAILED', `${ctx.op} sftp ${where}: the private key cannot be used: ${detail}`, { hint: 'Paste the whole private key (OpenSSH or PEM format, with its BEGIN/END lines) and, when it is encrypted, its passphrase.' })
  }
  if (level === 'client-authentication') {
    return make('AUTH_FAILED', `${ctx.op} sftp ${where}: the server refused the credentials (${detail})`, { hint: SFTP_AUTH_HINT })
  }
  if (level === 'client-timeout') {
    return make('UNREACHABLE', `${ctx.op} sftp ${where}: no SSH handshake in time (${detail})`, { retryable: true })
  }
  if (level === 'protocol' || /identification|Bad packet length|Protocol error/i.test(raw)) {
    return make('UNREACHABLE', `${ctx.op} sftp ${where}: the server does not speak SSH (${detail})`, { hint: 'Check the port: it must be the SSH server\'s (usually 22).', retryable: false })
  }
  if (level === 'handshake') {
    return make('UNREACHABLE', `${ctx.op} sftp ${where}: the SSH handshake failed (${detail})`, { hint: 'The server offers no key exchange, cipher or host key algorithm this client supports; check its sshd configuration.', retryable: false })
  }
  if (status === SFTP_NO_SUCH_FILE) return make('OBJECT_NOT_FOUND', `${ctx.op} sftp ${where}: no such file`)
  if (status === SFTP_PERMISSION_DENIED) return make('AUTH_FAILED', `${ctx.op} sftp ${where}: permission denied`, { hint: SFTP_PERMISSION_HINT })
  if (status === SFTP_OP_UNSUPPORTED) return make('UPLOAD_FAILED', `${ctx.op} sftp ${where}: the server does not support this operation (${detail})`, { retryable: false })
  if (status === SFTP_FAILURE) {
    return make('UPLOAD_FAILED', `${ctx.op} sftp ${where}: the server reported a failure (${detail})`, { hint: 'The server gives no detail: a full disk or quota, or a file where a directory is expected. Check free space on the server.', retryable: false })
  }
  if (isConnectionLoss(err)) {
    return make('UNREACHABLE', `${ctx.op} sftp ${where}: cannot reach the SSH server or the connection was lost (${detail})`, { retryable: true })
  }
  const network = networkErrorCode(err)
  if (network === 'UNREACHABLE') return make('UNREACHABLE', `${ctx.op} sftp ${where}: cannot reach the SSH server (${detail})`, { retryable: true })
  return make('UPLOAD_FAILED', `${ctx.op} sftp ${where}: ${detail}`, { retryable: false })
}
