import type { FastifyReply, FastifyRequest } from 'fastify'
import { and, eq, isNull } from 'drizzle-orm'
import { CloudPilotError } from '@cloudpilot/protocol'
import type { Db } from '../db/open-database.ts'
import { apiTokens } from '../db/schema.ts'
import { hashToken } from '../crypto/tokens.ts'

export interface AuthContext {
  tokenId: string
  workspaceId: string
  role: 'admin' | 'member'
}

declare module 'fastify' {
  interface FastifyRequest {
    auth: AuthContext
  }
}

const CACHE_MS = 10_000

/** Bearer API token authentication with a short positive cache (revocation takes effect within 10 s). */
export function createApiAuth (db: Db) {
  const cache = new Map<string, { auth: AuthContext, until: number }>()

  async function lookup (token: string): Promise<AuthContext | null> {
    const hash = hashToken(token)
    const hit = cache.get(hash)
    if (hit !== undefined && hit.until > Date.now()) return hit.auth
    const [row] = await db.select().from(apiTokens).where(and(eq(apiTokens.tokenHash, hash), isNull(apiTokens.revokedAt)))
    if (row === undefined) { cache.delete(hash); return null }
    const auth: AuthContext = { tokenId: row.id, workspaceId: row.workspaceId, role: row.role }
    if (cache.size > 10_000) cache.clear()
    cache.set(hash, { auth, until: Date.now() + CACHE_MS })
    return auth
  }

  return async function authenticate (request: FastifyRequest, _reply: FastifyReply): Promise<void> {
    const header = request.headers.authorization
    const match = typeof header === 'string' ? /^Bearer\s+(\S+)$/i.exec(header) : null
    if (match?.[1] === undefined) throw new CloudPilotError('UNAUTHORIZED')
    const auth = await lookup(match[1])
    if (auth === null) throw new CloudPilotError('UNAUTHORIZED')
    request.auth = auth
  }
}

/** Extracts a bearer token (for the agent endpoints, which use agent credentials instead of API tokens). */
export function bearerToken (header: string | string[] | undefined): string | null {
  if (typeof header !== 'string') return null
  const match = /^Bearer\s+(\S+)$/i.exec(header)
  return match?.[1] ?? null
}
