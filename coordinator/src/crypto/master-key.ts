import { randomBytes } from 'node:crypto'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'

/**
 * The master key: CLOUDPILOT_MASTER_KEY (64 hex chars or 44 base64 chars) or, when unset, `DATA_DIR/master.key`,
 * generated on first start (mode 0600). Losing it makes stored secrets unreadable: back it up.
 */
export async function loadMasterKey (configured: string | null, dataDir: string): Promise<{ key: Buffer, source: 'env' | 'file' | 'generated' }> {
  if (configured !== null) return { key: parseKey(configured, 'CLOUDPILOT_MASTER_KEY'), source: 'env' }
  const file = path.join(dataDir, 'master.key')
  try {
    return { key: parseKey((await readFile(file, 'utf8')).trim(), file), source: 'file' }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  const key = randomBytes(32)
  await mkdir(dataDir, { recursive: true, mode: 0o700 })
  await writeFile(file, key.toString('hex') + '\n', { mode: 0o600, flag: 'wx' })
  return { key, source: 'generated' }
}

function parseKey (text: string, where: string): Buffer {
  if (/^[0-9a-fA-F]{64}$/.test(text)) return Buffer.from(text, 'hex')
  const b = Buffer.from(text, 'base64')
  if (b.length === 32) return b
  throw new Error(`${where} must be 32 bytes as 64 hex characters or base64`)
}
