import t from 'tap'
import { mkdtemp, readdir, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { LocalDriver } from '../src/local.ts'
import { runConformance } from './conformance.ts'

const root = await mkdtemp(path.join(os.tmpdir(), 'cloudpilot-local-'))
t.teardown(() => rm(root, { recursive: true, force: true }))

/** Temporary files of interrupted puts (`<key>.part-<hex>`) anywhere under the root. */
async function partFiles (): Promise<string[]> {
  const entries = await readdir(root, { recursive: true })
  return entries.filter((name) => /\.part-[0-9a-f]{12}$/.test(name))
}

runConformance(t, 'local', async () => new LocalDriver({ path: root }), { leftovers: partFiles })
