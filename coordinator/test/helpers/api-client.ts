/** A small JSON client for the coordinator API used by the tests (real HTTP). */
export interface ApiResponse<T = any> {
  status: number
  body: T
  headers: Headers
}

export function apiClient (baseUrl: string, token: string | null) {
  async function call<T = any> (method: string, path: string, body?: unknown, extraHeaders: Record<string, string> = {}): Promise<ApiResponse<T>> {
    const headers: Record<string, string> = { ...extraHeaders }
    if (token !== null) headers.authorization = `Bearer ${token}`
    if (body !== undefined) headers['content-type'] = 'application/json'
    const res = await fetch(baseUrl + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
    const text = await res.text()
    let parsed: unknown = text
    try { parsed = text === '' ? null : JSON.parse(text) } catch { /* not JSON */ }
    return { status: res.status, body: parsed as T, headers: res.headers }
  }
  return {
    get: <T = any>(path: string) => call<T>('GET', path),
    post: <T = any>(path: string, body?: unknown) => call<T>('POST', path, body ?? {}),
    patch: <T = any>(path: string, body: unknown) => call<T>('PATCH', path, body),
    put: <T = any>(path: string, body: unknown) => call<T>('PUT', path, body),
    delete: <T = any>(path: string) => call<T>('DELETE', path),
    raw: async (path: string) => await fetch(baseUrl + path, { headers: token === null ? {} : { authorization: `Bearer ${token}` } }),
    call,
  }
}

export type ApiClient = ReturnType<typeof apiClient>
