import { writeFile, mkdir } from 'node:fs/promises'
import path from 'node:path'
import { eq } from 'drizzle-orm'
import { DESTINATION_TYPES } from '@cloudpilot/protocol'
import type { Db } from '../db/open-database.ts'
import { apiTokens, workspaces } from '../db/schema.ts'
import { hashToken, newToken } from '../crypto/tokens.ts'

export interface AdminBootstrap {
  workspaceId: string
  /** The admin token, only when it was created by this start (to print once). */
  createdToken: string | null
  tokenFile: string | null
}

/**
 * First start: create the default workspace (granted every destination type) and an admin API token — the preset
 * CLOUDPILOT_ADMIN_TOKEN or a generated one written to DATA_DIR/admin-token (0600). Later starts change nothing,
 * except that a preset token not yet known is added.
 */
export async function bootstrapAdmin (db: Db, options: { presetToken: string | null, dataDir: string }): Promise<AdminBootstrap> {
  return await db.transaction(async (tx) => {
    let [workspace] = await tx.select().from(workspaces).orderBy(workspaces.createdAt).limit(1)
    if (workspace === undefined) {
      [workspace] = await tx.insert(workspaces).values({ name: 'default', grantedDestinationTypes: [...DESTINATION_TYPES] }).returning()
    }
    if (workspace === undefined) throw new Error('could not create the default workspace')
    if (options.presetToken !== null) {
      const hash = hashToken(options.presetToken)
      const [known] = await tx.select({ id: apiTokens.id }).from(apiTokens).where(eq(apiTokens.tokenHash, hash))
      if (known === undefined) await tx.insert(apiTokens).values({ workspaceId: workspace.id, name: 'admin (CLOUDPILOT_ADMIN_TOKEN)', role: 'admin', tokenHash: hash })
      return { workspaceId: workspace.id, createdToken: null, tokenFile: null }
    }
    const [any] = await tx.select({ id: apiTokens.id }).from(apiTokens).limit(1)
    if (any !== undefined) return { workspaceId: workspace.id, createdToken: null, tokenFile: null }
    const token = newToken('api')
    await tx.insert(apiTokens).values({ workspaceId: workspace.id, name: 'admin', role: 'admin', tokenHash: hashToken(token) })
    await mkdir(options.dataDir, { recursive: true, mode: 0o700 })
    const tokenFile = path.join(options.dataDir, 'admin-token')
    await writeFile(tokenFile, token + '\n', { mode: 0o600 })
    return { workspaceId: workspace.id, createdToken: token, tokenFile }
  })
}
