import t from 'tap'
import { randomUUID } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { Compile } from 'typebox/compile'
import { COORDINATOR_FRAME_SCHEMAS } from '@cloudpilot/protocol'
import { COORDINATOR_FRAME_CHECKS } from '../src/coordinator-frame-checks.generated.ts'
import { GENERATED_FILE, generateCoordinatorFrameChecks } from '../scripts/generate-coordinator-frame-checks.ts'

t.test('the generated checks are up to date with frames.ts (else run protocol/scripts/generate-coordinator-frame-checks.ts)', async (t) => {
  t.equal(await readFile(GENERATED_FILE, 'utf8'), generateCoordinatorFrameChecks())
  t.same(Object.keys(COORDINATOR_FRAME_CHECKS).sort(), Object.keys(COORDINATOR_FRAME_SCHEMAS).sort())
})

t.test('the generated checks agree with TypeBox on valid and invalid frames', async (t) => {
  const uuid = randomUUID()
  const at = new Date().toISOString()
  const samples: Array<Record<string, unknown>> = [
    { type: 'welcome', id: 'w1', serverId: uuid, coordinatorVersion: '0.1.0', heartbeatIntervalMs: 15000, cancelJobs: [] },
    { type: 'welcome', id: 'w1', serverId: 'not-a-uuid', coordinatorVersion: '0.1.0', heartbeatIntervalMs: 15000, cancelJobs: [] },
    { type: 'welcome', id: 'w1', serverId: uuid, coordinatorVersion: '0.1.0', heartbeatIntervalMs: 15000, cancelJobs: [uuid], extra: 1 },
    { type: 'welcome', id: '', serverId: uuid, coordinatorVersion: '0.1.0', heartbeatIntervalMs: 15000, cancelJobs: [] },
    { type: 'job.cancel', id: 'c1', jobId: uuid },
    { type: 'job.cancel', id: 'c1', jobId: 'x' },
    { type: 'job.cancel', id: 'c1'.repeat(40), jobId: uuid },
    { type: 'ack', id: 'a1', ackId: 'x1', ok: true },
    { type: 'ack', id: 'a1', ackId: 'x1', ok: 'yes' },
    { type: 'ack', id: 'a1', ackId: 'x1', ok: false, error: { code: 'VALIDATION_FAILED', message: 'm' } },
    { type: 'error', id: 'e1', code: 'FRAME_INVALID', message: 'bad' },
    { type: 'error', id: 'e1', code: 7, message: 'bad' },
    {
      type: 'job.run', id: 'r1', job: {
        kind: 'restore', jobId: uuid, backupId: uuid, serverId: uuid,
        backup: { type: 'database', compression: 'gzip', encrypted: false, sha256: 'b'.repeat(64), sizeBytes: 10, engine: 'postgresql', databases: ['shop'] },
        archive: { localPath: null, objectKey: 'a/b.sql.gz', destination: null },
        database: { connection: { engine: 'postgresql', host: '127.0.0.1' }, sourceDatabase: null, targetDatabase: 'shop_copy' },
        targetPath: null, replaceExisting: false, timeoutSeconds: 60, createdAt: at,
      },
    },
    { type: 'job.run', id: 'r1', job: { kind: 'backup', jobId: uuid, createdAt: 'yesterday' } },
  ]
  for (const frame of samples) {
    const type = frame.type as string
    const schema = COORDINATOR_FRAME_SCHEMAS[type]
    const check = COORDINATOR_FRAME_CHECKS[type]
    if (schema === undefined || check === undefined) throw new Error(`no check for ${type}`)
    t.equal(check(frame), Compile(schema).Check(frame), JSON.stringify(frame).slice(0, 100))
  }
  t.ok(COORDINATOR_FRAME_CHECKS.welcome?.(samples[0]), 'a valid welcome passes')
  t.notOk(COORDINATOR_FRAME_CHECKS.welcome?.(samples[1]), 'a bad uuid fails')
})
