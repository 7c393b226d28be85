import { abortError } from './node-error-map.ts'

/**
 * `promise`, or an AbortError as soon as the signal fires. For requests whose transport takes no signal (an SFTP
 * request, a step of an SDK): the caller stops waiting; the work behind the promise is not stopped, and its late
 * failure is swallowed.
 */
export async function abortable<T> (promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return await promise
  if (signal.aborted) {
    promise.catch(() => {})
    throw abortError(signal)
  }
  return await new Promise<T>((resolve, reject) => {
    const onAbort = (): void => { promise.catch(() => {}); reject(abortError(signal)) }
    signal.addEventListener('abort', onAbort, { once: true })
    promise.then(
      (value) => { signal.removeEventListener('abort', onAbort); resolve(value) },
      (err: unknown) => { signal.removeEventListener('abort', onAbort); reject(err) },
    )
  })
}

/** Whether the signal fired (a function, so TypeScript does not narrow `signal.aborted` across awaits). */
export function aborted (signal: AbortSignal | undefined): boolean {
  return signal?.aborted === true
}
