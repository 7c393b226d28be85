/**
 * Google's OAuth 2.0 token endpoint, as the gcs and google_drive doubles serve it (POST <origin>/token):
 *
 * - grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer: the assertion must be a JWT signed RS256 with the
 *   private key of a registered service account (checked against its public key), with iss = its client_email,
 *   aud = this endpoint's URL, iat/exp within an hour, and a scope (developers.google.com/identity/protocols/
 *   oauth2/service-account#httprest). Refusals answer 400 {error: "invalid_grant", error_description} as Google
 *   does ("Invalid JWT Signature.", "Invalid JWT: Token must be a short-lived token ...").
 * - grant_type=refresh_token: client_id + client_secret + refresh_token of a registered client (RFC 6749 §6);
 *   an unknown client is 401 invalid_client, an unknown or revoked refresh token 400 invalid_grant.
 *
 * Access tokens are random, valid `tokenLifetimeSeconds` (3600 unless a test shortens it).
 */
import { generateKeyPairSync, randomBytes, verify, type KeyObject } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'

export interface ServiceAccountFixture {
  clientEmail: string
  /** The key file as a user pastes it, with `token_uri` pointing at the double. */
  json: string
  publicKey: KeyObject
}

export interface OAuthDouble {
  /** Registers a service account whose key file points at `tokenUri`. */
  serviceAccount: (name: string, tokenUri: string) => ServiceAccountFixture
  /** Registers an OAuth client and one refresh token for it. */
  oauthClient: () => { clientId: string, clientSecret: string, refreshToken: string }
  revokeRefreshToken: (refreshToken: string) => void
  /** Makes every access token issued so far invalid (as a revocation or a key rotation does). */
  revokeAccessTokens: () => void
  /** Who an access token was issued to (client email or client id), or undefined when it is unknown or expired. */
  principalOf: (authorization: string | undefined) => string | undefined
  /** Access tokens issued so far. */
  issued: () => number
  tokenLifetimeSeconds: number
  /** Handles POST /token. */
  handle: (req: IncomingMessage, res: ServerResponse, body: Buffer, endpointUrl: string) => void
}

function json (res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) })
  res.end(text)
}

export function createOAuthDouble (): OAuthDouble {
  const accounts = new Map<string, KeyObject>()
  const clients = new Map<string, string>()
  const refreshTokens = new Map<string, string>()
  const tokens = new Map<string, { principal: string, expiresAt: number }>()
  let issued = 0

  const issue = (res: ServerResponse, principal: string): void => {
    const token = `ya29.double-${randomBytes(24).toString('base64url')}`
    tokens.set(token, { principal, expiresAt: Date.now() + double.tokenLifetimeSeconds * 1000 })
    issued++
    json(res, 200, { access_token: token, expires_in: double.tokenLifetimeSeconds, token_type: 'Bearer' })
  }

  const double: OAuthDouble = {
    tokenLifetimeSeconds: 3600,
    serviceAccount: (name, tokenUri) => {
      const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
      const clientEmail = `${name}@cloudpilot-test.iam.gserviceaccount.com`
      accounts.set(clientEmail, publicKey)
      const keyFile = {
        type: 'service_account',
        project_id: 'cloudpilot-test',
        private_key_id: randomBytes(20).toString('hex'),
        private_key: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
        client_email: clientEmail,
        client_id: String(Math.floor(Math.random() * 1e15)),
        auth_uri: 'https://accounts.google.com/o/oauth2/auth',
        token_uri: tokenUri,
      }
      return { clientEmail, json: JSON.stringify(keyFile, null, 2), publicKey }
    },
    oauthClient: () => {
      const clientId = `${randomBytes(8).toString('hex')}.apps.googleusercontent.com`
      const clientSecret = `GOCSPX-${randomBytes(18).toString('base64url')}`
      const refreshToken = `1//double-${randomBytes(30).toString('base64url')}`
      clients.set(clientId, clientSecret)
      refreshTokens.set(refreshToken, clientId)
      return { clientId, clientSecret, refreshToken }
    },
    revokeRefreshToken: (refreshToken) => { refreshTokens.delete(refreshToken) },
    revokeAccessTokens: () => { tokens.clear() },
    principalOf: (authorization) => {
      const m = /^Bearer (\S+)$/.exec(authorization ?? '')
      const entry = m?.[1] === undefined ? undefined : tokens.get(m[1])
      if (entry === undefined || entry.expiresAt <= Date.now()) return undefined
      return entry.principal
    },
    issued: () => issued,
    handle: (req, res, body, endpointUrl) => {
      if (req.method !== 'POST') { json(res, 405, { error: 'invalid_request', error_description: 'POST only' }); return }
      if (!/^application\/x-www-form-urlencoded/.test(req.headers['content-type'] ?? '')) { json(res, 400, { error: 'invalid_request', error_description: 'Bad Request' }); return }
      const form = new URLSearchParams(body.toString())
      const grant = form.get('grant_type')
      if (grant === 'urn:ietf:params:oauth:grant-type:jwt-bearer') {
        const parts = (form.get('assertion') ?? '').split('.')
        if (parts.length !== 3) { json(res, 400, { error: 'invalid_grant', error_description: 'Invalid JWT.' }); return }
        const [h, c, s] = parts as [string, string, string]
        let header: { alg?: string }
        let claims: { iss?: string, aud?: string, iat?: number, exp?: number, scope?: string }
        try {
          header = JSON.parse(Buffer.from(h, 'base64url').toString()) as typeof header
          claims = JSON.parse(Buffer.from(c, 'base64url').toString()) as typeof claims
        } catch {
          json(res, 400, { error: 'invalid_grant', error_description: 'Invalid JWT.' }); return
        }
        const publicKey = accounts.get(claims.iss ?? '')
        if (header.alg !== 'RS256' || publicKey === undefined) { json(res, 400, { error: 'invalid_grant', error_description: 'Invalid grant: account not found' }); return }
        if (!verify('RSA-SHA256', Buffer.from(`${h}.${c}`), publicKey, Buffer.from(s, 'base64url'))) { json(res, 400, { error: 'invalid_grant', error_description: 'Invalid JWT Signature.' }); return }
        const now = Math.floor(Date.now() / 1000)
        if (claims.aud !== endpointUrl) { json(res, 400, { error: 'invalid_grant', error_description: 'Invalid JWT: audience is not the token endpoint.' }); return }
        if (typeof claims.iat !== 'number' || typeof claims.exp !== 'number' || claims.exp - claims.iat > 3600 || claims.exp < now || claims.iat > now + 300) {
          json(res, 400, { error: 'invalid_grant', error_description: 'Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.' }); return
        }
        if (typeof claims.scope !== 'string' || claims.scope === '') { json(res, 400, { error: 'invalid_scope', error_description: 'Invalid OAuth scope or ID token audience provided.' }); return }
        issue(res, claims.iss ?? '')
        return
      }
      if (grant === 'refresh_token') {
        const clientId = form.get('client_id') ?? ''
        if (clients.get(clientId) !== form.get('client_secret')) { json(res, 401, { error: 'invalid_client', error_description: 'The OAuth client was not found.' }); return }
        if (refreshTokens.get(form.get('refresh_token') ?? '') !== clientId) { json(res, 400, { error: 'invalid_grant', error_description: 'Token has been expired or revoked.' }); return }
        issue(res, clientId)
        return
      }
      json(res, 400, { error: 'unsupported_grant_type', error_description: `Invalid grant_type: ${grant ?? ''}` })
    },
  }
  return double
}
