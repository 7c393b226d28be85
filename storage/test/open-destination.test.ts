/**
 * openDestination: every destination type opens its driver, and drivers are loaded lazily: opening one type loads
 * that type's SDK only (an agent that never uses Azure never loads the Azure SDK). Each type runs in its own child
 * process that records every module it loads.
 */
import t from 'tap'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { DESTINATION_TYPES } from '@cloudpilot/protocol'
import { openDestination } from '../src/open-destination.ts'

const child = new URL('./helpers/lazy-load-child.ts', import.meta.url).pathname
const expected: Record<string, string[]> = {
  local: [],
  s3: ['aws'],
  sftp: ['ssh2'],
  azure_blob: ['azure'],
  gcs: ['gcs', 'googleAuth'],
  google_drive: [],
  cloudinary: [],
}

t.test('each type loads its own SDK and no other', async (t) => {
  const results = await Promise.all(DESTINATION_TYPES.map(async (type) => {
    const { stdout } = await promisify(execFile)(process.execPath, [child, type], { cwd: process.cwd() })
    return JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}') as { type: string, before: Record<string, boolean>, after: Record<string, boolean> }
  }))
  for (const [i, type] of DESTINATION_TYPES.entries()) {
    const result = results[i]
    t.equal(result?.type, type, `${type}: the driver of that type`)
    t.same(Object.entries(result?.before ?? {}).filter(([, v]) => v).map(([k]) => k), [], `${type}: importing openDestination loads no SDK`)
    t.same(Object.entries(result?.after ?? {}).filter(([, v]) => v).map(([k]) => k).sort(), (expected[type] ?? []).sort(), `${type}: opening it loads ${expected[type]?.join(', ') || 'no SDK'}`)
  }
})

t.test('an unknown type is UNSUPPORTED', async (t) => {
  await t.rejects(openDestination({ type: 'ftp' as 'local', config: {}, credentials: {} }), { code: 'UNSUPPORTED' })
})

t.test('options reach the drivers: private endpoints are refused unless allowed', async (t) => {
  const sftp = { type: 'sftp' as const, config: { host: '127.0.0.1', username: 'u', path: '/srv', trustOnFirstUse: true }, credentials: { password: 'p' } }
  await t.rejects(openDestination(sftp), { code: 'ENDPOINT_NOT_ALLOWED' })
  const driver = await openDestination(sftp, { allowPrivateEndpoints: true })
  t.equal(driver.type, 'sftp')
  await driver.close()
})
