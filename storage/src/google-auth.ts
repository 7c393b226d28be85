import { createPrivateKey, sign, type KeyObject } from 'node:crypto'
import { CloudPilotError } from '@cloudpilot/protocol'
import { abortable } from './abortable.ts'
import { fetchWithDeadline, readJson } from './fetch-request.ts'
import { mapTransportError, transientStatus } from './http-error-map.ts'
import { checkResolvedHost, parseServiceUrl } from './http-endpoint.ts'
import { DEFAULT_RETRY, withRetries, type RetryPolicy } from './retry.ts'
import { redact } from './redact.ts'

/**
 * Google OAuth 2.0 access tokens for the gcs and google_drive drivers, without googleapis / google-auth-library:
 *
 * - service account: a JWT signed RS256 with the key's private key (node:crypto), exchanged at the key's own
 *   `token_uri` (grant urn:ietf:params:oauth:grant-type:jwt-bearer), as in "Using OAuth 2.0 for Server to Server
 *   Applications" (developers.google.com/identity/protocols/oauth2/service-account#httprest);
 * - installed-app credentials: clientId + clientSecret + refreshToken exchanged at the token endpoint
 *   (grant refresh_token, RFC 6749 §6).
 *
 * Tokens are cached until a minute before they expire; concurrent callers share one request. Token endpoint
 * answers follow RFC 6749 §5.2: `invalid_grant` / `invalid_client` / `unauthorized_client` are AUTH_FAILED (never
 * retried); 5xx and network failures are retried with backoff.
 */

export const GOOGLE_TOKEN_URL = 'https://oauth2.googleapis.com/token'

export interface ServiceAccountKey {
  clientEmail: string
  privateKey: KeyObject
  privateKeyId: string | undefined
  tokenUri: URL
  projectId: string | undefined
}

/** Parses a service account JSON key file; VALIDATION_FAILED (naming the problem, never the key) when it is not one. */
export function parseServiceAccountJson (json: string, allowPrivate: boolean): ServiceAccountKey {
  let data: Record<string, unknown>
  try {
    const parsed = JSON.parse(json) as unknown
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('not an object')
    data = parsed as Record<string, unknown>
  } catch {
    throw new CloudPilotError('VALIDATION_FAILED', 'serviceAccountJson is not valid JSON: paste the whole key file downloaded from the Google Cloud console (IAM → Service accounts → Keys)')
  }
  if (data.type !== undefined && data.type !== 'service_account') throw new CloudPilotError('VALIDATION_FAILED', `serviceAccountJson is a "${String(data.type)}" credential, not a service account key`)
  const clientEmail = typeof data.client_email === 'string' ? data.client_email.trim() : ''
  const pem = typeof data.private_key === 'string' ? data.private_key : ''
  if (clientEmail === '' || pem === '') throw new CloudPilotError('VALIDATION_FAILED', 'serviceAccountJson needs client_email and private_key')
  let privateKey: KeyObject
  try {
    privateKey = createPrivateKey(pem.replace(/\\n/g, '\n'))
  } catch {
    throw new CloudPilotError('VALIDATION_FAILED', 'serviceAccountJson private_key cannot be read (it must be the PEM "-----BEGIN PRIVATE KEY-----" block of the key file)')
  }
  if (privateKey.asymmetricKeyType !== 'rsa') throw new CloudPilotError('VALIDATION_FAILED', 'serviceAccountJson private_key must be an RSA key')
  const tokenUri = parseServiceUrl(typeof data.token_uri === 'string' && data.token_uri.trim() !== '' ? data.token_uri : GOOGLE_TOKEN_URL, 'serviceAccountJson token_uri', allowPrivate)
  return {
    clientEmail,
    privateKey,
    privateKeyId: typeof data.private_key_id === 'string' ? data.private_key_id : undefined,
    tokenUri,
    projectId: typeof data.project_id === 'string' ? data.project_id : undefined,
  }
}

function base64url (data: Buffer | string): string {
  return Buffer.from(data).toString('base64url')
}

/** The signed JWT a service account exchanges for an access token. */
export function serviceAccountAssertion (key: ServiceAccountKey, scopes: readonly string[], now = Date.now()): string {
  const iat = Math.floor(now / 1000)
  const header = { alg: 'RS256', typ: 'JWT', ...(key.privateKeyId === undefined ? {} : { kid: key.privateKeyId }) }
  const claims = { iss: key.clientEmail, scope: scopes.join(' '), aud: key.tokenUri.href, iat, exp: iat + 3600 }
  const unsigned = `${base64url(JSON.stringify(header))}.${base64url(JSON.stringify(claims))}`
  return `${unsigned}.${base64url(sign('RSA-SHA256', Buffer.from(unsigned), key.privateKey))}`
}

export type TokenGrant =
  | { kind: 'service_account', key: ServiceAccountKey, scopes: readonly string[] }
  | { kind: 'refresh_token', clientId: string, clientSecret: string, refreshToken: string, tokenUrl: URL }

export interface AccessToken {
  token: string
  /** Epoch ms. */
  expiresAt: number
}

export interface TokenSourceOptions {
  allowPrivate: boolean
  timeoutMs: number
  retry?: RetryPolicy
  /** Where the credentials are used, for messages ("gcs bucket x"). */
  label: string
}

export class AccessTokenSource {
  private readonly grant: TokenGrant
  private readonly options: TokenSourceOptions
  private readonly secrets: readonly string[]
  private cached: AccessToken | undefined
  private pending: Promise<AccessToken> | undefined

  constructor (grant: TokenGrant, options: TokenSourceOptions) {
    this.grant = grant
    this.options = options
    this.secrets = grant.kind === 'refresh_token' ? [grant.clientSecret, grant.refreshToken] : []
  }

  get tokenUrl (): URL {
    return this.grant.kind === 'service_account' ? this.grant.key.tokenUri : this.grant.tokenUrl
  }

  /** A valid access token (cached, or fetched now). */
  async token (signal?: AbortSignal): Promise<AccessToken> {
    if (this.cached !== undefined && this.cached.expiresAt - 60_000 > Date.now()) return this.cached
    this.pending ??= this.fetchToken().finally(() => { this.pending = undefined })
    return await abortable(this.pending, signal)
  }

  /** The cached token, if any. */
  current (): string | undefined {
    return this.cached?.token
  }

  /** How long the cached token is still valid (0 when there is none). */
  remainingMs (): number {
    return this.cached === undefined ? 0 : Math.max(0, this.cached.expiresAt - Date.now())
  }

  /** Forget the cached token (the API answered 401 with it). */
  invalidate (): void {
    this.cached = undefined
  }

  /** Tokens and assertions never appear in messages. */
  redact (text: string): string {
    const extra = this.cached === undefined ? [] : [this.cached.token]
    return redact(text, [...this.secrets, ...extra])
  }

  private async fetchToken (): Promise<AccessToken> {
    const url = this.tokenUrl
    const grant = this.grant
    const what = `${this.options.label}: getting an access token from ${url.origin}`
    return await withRetries(async () => {
      const body = grant.kind === 'service_account'
        ? new URLSearchParams({ grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer', assertion: serviceAccountAssertion(grant.key, grant.scopes) })
        : new URLSearchParams({ grant_type: 'refresh_token', client_id: grant.clientId, client_secret: grant.clientSecret, refresh_token: grant.refreshToken })
      let response: Response
      try {
        await checkResolvedHost(url, this.options.allowPrivate)
        response = await fetchWithDeadline(url, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
          body: body.toString(),
          timeoutMs: this.options.timeoutMs,
        })
      } catch (err) {
        throw mapTransportError(err, { what, endpoint: url.origin, secrets: this.secrets })
      }
      const data = await readJson(response) as { access_token?: unknown, expires_in?: unknown, error?: unknown, error_description?: unknown } | undefined
      if (response.ok && typeof data?.access_token === 'string' && data.access_token !== '') {
        const seconds = typeof data.expires_in === 'number' ? data.expires_in : Number(data.expires_in ?? 3600)
        const token = { token: data.access_token, expiresAt: Date.now() + (Number.isFinite(seconds) && seconds > 0 ? seconds : 3600) * 1000 }
        this.cached = token
        return token
      }
      const code = typeof data?.error === 'string' ? data.error : ''
      const description = typeof data?.error_description === 'string' ? data.error_description : ''
      const detail = this.redact([code, description].filter((s) => s !== '').join(': ') || `HTTP ${response.status}`)
      if (transientStatus(response.status)) throw new CloudPilotError('UNREACHABLE', `${what}: the token endpoint failed (${detail})`, { retryable: true })
      const hint = grant.kind === 'service_account'
        ? 'The service account key was refused: check that the key is the current one (keys can be deleted or disabled in IAM → Service accounts) and paste the whole JSON key file again.'
        : 'The refresh token or OAuth client was refused: the refresh token may have been revoked or expired (tokens of apps in "testing" status expire after 7 days); authorize again and re-enter clientId, clientSecret and refreshToken.'
      throw new CloudPilotError('AUTH_FAILED', `${what}: the credentials were refused (${detail})`, { hint })
    }, { policy: this.options.retry ?? DEFAULT_RETRY })
  }
}
