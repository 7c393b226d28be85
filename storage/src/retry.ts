import { CloudPilotError } from '@cloudpilot/protocol'
import { aborted } from './abortable.ts'
import { abortError, isAbortError } from './node-error-map.ts'

/**
 * Bounded retries with exponential backoff and full jitter, for drivers whose SDK does not retry by itself
 * (sftp, the REST drivers). Only failures marked `retryable` (UNREACHABLE, 5xx, 429, resets, timeouts) are
 * retried; AUTH_FAILED, CONTAINER_NOT_FOUND, TLS_ERROR and other 4xx never are. An abort stops at once, also
 * while waiting between attempts.
 */
export interface RetryPolicy {
  /** Attempts in all, the first one included. */
  attempts: number
  /** Delay before the second attempt; doubled for each further one. */
  baseDelayMs: number
  maxDelayMs: number
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 3, baseDelayMs: 250, maxDelayMs: 8_000 }

/** Whether a failure is worth another attempt: a CloudPilotError marked retryable (never an abort). */
export function isRetryable (err: unknown): boolean {
  if (isAbortError(err)) return false
  return err instanceof CloudPilotError && err.retryable
}

/** Full-jitter delay before attempt `attempt + 1` (attempt counts from 1). */
export function backoffDelay (attempt: number, policy: RetryPolicy): number {
  const ceiling = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (attempt - 1))
  return Math.round(ceiling / 2 + Math.random() * ceiling / 2)
}

/** Waits `ms`, rejecting with an AbortError as soon as the signal fires. */
export async function sleep (ms: number, signal?: AbortSignal): Promise<void> {
  if (aborted(signal)) throw abortError(signal)
  await new Promise<void>((resolve, reject) => {
    const onAbort = (): void => { clearTimeout(timer); reject(abortError(signal)) }
    const timer = setTimeout(() => { signal?.removeEventListener('abort', onAbort); resolve() }, ms)
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}

export interface RetryOptions {
  policy?: RetryPolicy
  signal?: AbortSignal | undefined
  /** Default: `isRetryable`. */
  retryable?: (err: unknown) => boolean
}

/** Runs `attempt` until it succeeds, fails with a non-retryable error, or the attempts are used up. */
export async function withRetries<T> (attempt: (n: number) => Promise<T>, options: RetryOptions = {}): Promise<T> {
  const policy = options.policy ?? DEFAULT_RETRY
  const retryable = options.retryable ?? isRetryable
  for (let n = 1; ; n++) {
    if (aborted(options.signal)) throw abortError(options.signal)
    try {
      return await attempt(n)
    } catch (err) {
      if (aborted(options.signal)) throw abortError(options.signal)
      if (n >= policy.attempts || !retryable(err)) throw err
      await sleep(backoffDelay(n, policy), options.signal)
    }
  }
}
