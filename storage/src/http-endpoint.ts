import { isIP } from 'node:net'
import { CloudPilotError } from '@cloudpilot/protocol'
import { checkEndpointHost, guardedLookup } from './endpoint-guard.ts'

/**
 * Service URLs of the REST drivers (gcs `apiEndpoint`, google_drive `rootUrl`/`tokenUrl`, cloudinary
 * `apiUrl`/`deliveryUrl`, a service account's `token_uri`): user input that the agent and coordinator send
 * bearer credentials to, so:
 *
 * - https only; plain http only together with private endpoints (a local emulator or test double);
 * - no credentials, query or fragment in the URL;
 * - the host goes through the SSRF guard: a literal address when the driver is made, a name on every request
 *   (`checkResolvedHost`). `fetch` takes no `lookup`, so a name is resolved just before the request and fetch
 *   resolves it again: a DNS answer that changes in between (rebinding) is not caught for these custom
 *   endpoints. The default endpoints (Google's, Cloudinary's) are fixed public hosts.
 */
export function parseServiceUrl (raw: string, what: string, allowPrivate: boolean): URL {
  let url: URL
  try {
    url = new URL(raw.trim())
  } catch {
    throw new CloudPilotError('VALIDATION_FAILED', `${what} is not a valid URL`)
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new CloudPilotError('VALIDATION_FAILED', `${what} must be an https URL`)
  if (url.protocol === 'http:' && !allowPrivate) throw new CloudPilotError('VALIDATION_FAILED', `${what} must use https (plain http only for test doubles and emulators on private endpoints)`)
  if (url.username !== '' || url.password !== '') throw new CloudPilotError('VALIDATION_FAILED', `${what} must not contain credentials`)
  if (url.search !== '' || url.hash !== '') throw new CloudPilotError('VALIDATION_FAILED', `${what} must not have a query or fragment`)
  checkEndpointHost(url.hostname, allowPrivate)
  return url
}

/** Resolves the URL's host through the SSRF guard; ENDPOINT_NOT_ALLOWED when it resolves somewhere refused. */
export async function checkResolvedHost (url: URL, allowPrivate: boolean): Promise<void> {
  const host = url.hostname.replace(/^\[|\]$/g, '')
  if (isIP(host) !== 0) return // checked when parsed
  const lookup = guardedLookup(allowPrivate)
  await new Promise<void>((resolve, reject) => {
    lookup(host, { all: true }, (err) => {
      if (err === null) { resolve(); return }
      if (err instanceof CloudPilotError) { reject(err); return }
      reject(Object.assign(new Error(`cannot resolve ${host}: ${err.message}`), { code: err.code ?? 'ENOTFOUND', cause: err }))
    })
  })
}
