import { CloudPilotError, type ErrorCode } from '@cloudpilot/protocol'

const UNREACHABLE = new Set(['ECONNREFUSED', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'ECONNRESET', 'EPIPE', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_SOCKET'])
const TLS = /CERT|SSL|TLS|self[- ]signed|unable to verify|wrong version number|EPROTO/i

/** Maps a Node system/network error to a destination error code, or undefined when it is none of them. */
export function networkErrorCode (err: unknown): ErrorCode | undefined {
  let current: unknown = err
  for (let depth = 0; depth < 5 && current !== undefined && current !== null; depth++) {
    const e = current as { code?: unknown, message?: unknown, cause?: unknown }
    const code = typeof e.code === 'string' ? e.code : ''
    const message = typeof e.message === 'string' ? e.message : ''
    if (UNREACHABLE.has(code)) return 'UNREACHABLE'
    if (TLS.test(code) || (code === '' && TLS.test(message))) return 'TLS_ERROR'
    current = e.cause
  }
  return undefined
}

/** Wraps any error as a CloudPilotError, keeping an existing code; an AbortError is returned as it is. */
export function asStorageError (err: unknown, fallback: ErrorCode, context: string): Error {
  if (err instanceof CloudPilotError) return err
  if (isAbortError(err)) return err as Error
  const code = networkErrorCode(err) ?? fallback
  const message = err instanceof Error ? err.message : String(err)
  return new CloudPilotError(code, `${context}: ${message}`, { cause: err })
}

export function isAbortError (err: unknown): boolean {
  return typeof err === 'object' && err !== null && ((err as { name?: unknown }).name === 'AbortError' || (err as { code?: unknown }).code === 'ABORT_ERR')
}

/**
 * The AbortError to reject with when `signal` fired: its reason when that already is an AbortError, otherwise an
 * AbortError carrying the reason (a timeout's TimeoutError, a job's CANCELLED ...) as `cause`.
 */
export function abortError (signal?: AbortSignal): Error {
  const reason: unknown = signal?.reason
  if (isAbortError(reason) && reason instanceof Error) return reason
  const err = new Error('The operation was aborted', reason === undefined ? undefined : { cause: reason })
  err.name = 'AbortError'
  Object.defineProperty(err, 'code', { value: 'ABORT_ERR', enumerable: true })
  return err
}

/** Like `signal.throwIfAborted()`, but always throws an AbortError (see `abortError`). */
export function throwIfAborted (signal?: AbortSignal): void {
  if (signal?.aborted === true) throw abortError(signal)
}
