import { aborted } from './abortable.ts'
import { abortError } from './node-error-map.ts'

export interface FetchOptions {
  method?: string
  headers?: Record<string, string>
  body?: Buffer | string | URLSearchParams | undefined
  /** The caller's signal: aborts the request and, later, the response body. */
  signal?: AbortSignal | undefined
  /** Time allowed until the answer's headers (sending the body included). */
  timeoutMs: number
}

/**
 * `fetch` with a deadline for the answer's headers only (a download may then stream for as long as it takes,
 * while a server that never answers fails with ETIMEDOUT, i.e. UNREACHABLE) and the caller's signal for the whole
 * exchange (an abort rejects with an AbortError). HTTP error statuses are returned, not thrown.
 */
export async function fetchWithDeadline (url: string | URL, options: FetchOptions): Promise<Response> {
  const { signal } = options
  if (aborted(signal)) throw abortError(signal)
  const deadline = new AbortController()
  const timer = setTimeout(() => {
    deadline.abort(Object.assign(new Error(`no answer within ${Math.round(options.timeoutMs / 1000)} s`), { name: 'TimeoutError', code: 'ETIMEDOUT' }))
  }, options.timeoutMs)
  timer.unref()
  try {
    return await fetch(url, {
      method: options.method ?? 'GET',
      ...(options.headers === undefined ? {} : { headers: options.headers }),
      ...(options.body === undefined ? {} : { body: options.body }),
      // AbortSignal.any holds no listener on the caller's (long-lived) signal once this request is gone.
      signal: signal === undefined ? deadline.signal : AbortSignal.any([signal, deadline.signal]),
      redirect: 'manual',
    })
  } catch (err) {
    if (aborted(signal)) throw abortError(signal)
    throw err
  } finally {
    clearTimeout(timer)
  }
}

/** Reads a (small) answer as text, at most `limit` bytes; never throws. */
export async function readText (response: Response, limit = 64 * 1024): Promise<string> {
  try {
    const text = await response.text()
    return text.length > limit ? text.slice(0, limit) : text
  } catch {
    return ''
  }
}

/** Reads a JSON answer; undefined when it is not JSON. */
export async function readJson (response: Response): Promise<unknown> {
  const text = await readText(response, 16 * 1024 * 1024)
  try {
    return JSON.parse(text) as unknown
  } catch {
    return undefined
  }
}
