import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'

/** Token prefixes make a leaked token recognisable (secret scanners) and tell kinds apart. */
export const TOKEN_PREFIX = { api: 'cpk_', enrollment: 'cpe_', agent: 'cpa_', transfer: 'cpt_' } as const

export function newToken (kind: keyof typeof TOKEN_PREFIX): string {
  return TOKEN_PREFIX[kind] + randomBytes(32).toString('base64url')
}

/** Only hashes are stored; a 256-bit random token needs no slow KDF. */
export function hashToken (token: string): string {
  return createHash('sha256').update(token).digest('hex')
}

export function safeEqual (a: string, b: string): boolean {
  const x = Buffer.from(a)
  const y = Buffer.from(b)
  return x.length === y.length && timingSafeEqual(x, y)
}
