import { randomBytes } from 'node:crypto'
import { Readable } from 'node:stream'
import { CloudPilotError } from '@cloudpilot/protocol'
import type { CallOptions, StorageDriver, TestResult } from './driver.ts'

/**
 * Test Connection as every driver does it: write a small probe object, read it back, compare, delete it. The
 * delete is part of the test (retention deletes objects: a key that may not delete fails the test); when the read
 * fails the probe is still removed, best effort.
 */
export async function probeRoundTrip (driver: Pick<StorageDriver, 'put' | 'get' | 'delete'>, options: CallOptions = {}): Promise<TestResult> {
  const started = performance.now()
  const key = `.cloudpilot-probe-${randomBytes(6).toString('hex')}`
  const payload = Buffer.from(`cloudpilot probe ${new Date().toISOString()}\n`)
  await driver.put(key, Readable.from([payload]), { ...options, contentType: 'text/plain' })
  try {
    const chunks: Buffer[] = []
    for await (const chunk of await driver.get(key, options)) chunks.push(chunk as Buffer)
    if (!Buffer.concat(chunks).equals(payload)) throw new CloudPilotError('VERIFY_FAILED', 'the probe object read back differs from what was written')
  } catch (err) {
    await driver.delete(key).catch(() => {})
    throw err
  }
  await driver.delete(key, options)
  return { latencyMs: Math.round(performance.now() - started) }
}
