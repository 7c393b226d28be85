import { CloudPilotError } from '@cloudpilot/protocol'
import { aborted } from './abortable.ts'
import { abortError, isAbortError, networkErrorCode } from './node-error-map.ts'
import { redact } from './redact.ts'

/**
 * Failures below HTTP (refused, reset, timed out, TLS) of the REST drivers, as destination codes. `fetch` reports
 * them as `TypeError: fetch failed` with the system error as `cause`.
 */
export interface TransportContext {
  /** e.g. "put gdrive folder/x.sql.gz" */
  what: string
  /** scheme://host[:port] that was called */
  endpoint: string
  secrets: readonly string[]
  signal?: AbortSignal | undefined
}

function causeMessage (err: unknown): string {
  let current: unknown = err
  let text = ''
  for (let depth = 0; depth < 4 && current !== undefined && current !== null; depth++) {
    const message = (current as { message?: unknown }).message
    if (typeof message === 'string' && message !== '' && message !== 'fetch failed') text = message
    current = (current as { cause?: unknown }).cause
  }
  return text === '' ? (err instanceof Error ? err.message : String(err)) : text
}

export function mapTransportError (err: unknown, ctx: TransportContext): Error {
  if (aborted(ctx.signal)) return abortError(ctx.signal)
  if (err instanceof CloudPilotError) return err
  const detail = redact(causeMessage(err), ctx.secrets)
  const network = networkErrorCode(err)
  if (network === 'TLS_ERROR') return new CloudPilotError('TLS_ERROR', `${ctx.what}: TLS with ${ctx.endpoint} failed: ${detail}`, { cause: err })
  if (network === 'UNREACHABLE' || isAbortError(err) || (err as { name?: unknown } | null)?.name === 'TimeoutError') {
    return new CloudPilotError('UNREACHABLE', `${ctx.what}: cannot reach ${ctx.endpoint}: ${detail}`, { cause: err, retryable: true })
  }
  return new CloudPilotError('UPLOAD_FAILED', `${ctx.what}: ${detail}`, { cause: err, retryable: false })
}

/** Whether an HTTP status is worth another attempt. */
export function transientStatus (status: number): boolean {
  return status === 408 || status === 429 || status >= 500
}
