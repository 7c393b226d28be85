import t from 'tap'
import { randomUUID } from 'node:crypto'
import { decodeAgentFrame, decodeCoordinatorFrame, MAX_FRAME_BYTES, PROTOCOL_VERSION } from '@cloudpilot/protocol'

const hello = {
  type: 'hello', id: 'h1', protocolVersion: PROTOCOL_VERSION, agentVersion: '0.1.0', hostname: 'web-1',
  os: 'linux', arch: 'x64', tools: { pg_dump: '15.19' }, runningJobs: [],
}

t.test('a valid hello decodes', async (t) => {
  const r = decodeAgentFrame(JSON.stringify(hello))
  t.ok(r.ok)
  if (r.ok) t.equal(r.frame.type, 'hello')
})

t.test('non-JSON is FRAME_INVALID', async (t) => {
  const r = decodeAgentFrame('{not json')
  t.same(r, { ok: false, code: 'FRAME_INVALID', message: 'frame is not valid JSON' })
})

t.test('JSON that is not an object is FRAME_INVALID', async (t) => {
  for (const raw of ['[]', '42', 'null', '"hello"']) {
    const r = decodeAgentFrame(raw)
    t.equal(r.ok ? 'ok' : r.code, 'FRAME_INVALID', raw)
  }
})

t.test('unknown type is FRAME_UNKNOWN_TYPE and keeps the id for the reply', async (t) => {
  const r = decodeAgentFrame(JSON.stringify({ type: 'rm -rf', id: 'x1' }))
  t.equal(r.ok, false)
  if (!r.ok) { t.equal(r.code, 'FRAME_UNKNOWN_TYPE'); t.equal(r.refId, 'x1') }
})

t.test('a frame of the other direction is unknown here', async (t) => {
  const r = decodeCoordinatorFrame(JSON.stringify(hello))
  t.equal(r.ok ? 'ok' : r.code, 'FRAME_UNKNOWN_TYPE')
})

t.test('schema violations name the field', async (t) => {
  const r = decodeAgentFrame(JSON.stringify({ ...hello, protocolVersion: 'one' }))
  t.equal(r.ok, false)
  if (!r.ok) { t.equal(r.code, 'FRAME_INVALID'); t.match(r.message, /protocolVersion/) }
})

t.test('job.status with a bad sha256 or status is refused', async (t) => {
  const base = { type: 'job.status', id: 's1', jobId: randomUUID(), status: 'completed', offsiteStatus: 'uploaded', at: new Date().toISOString() }
  t.ok(decodeAgentFrame(JSON.stringify({ ...base, sha256: 'a'.repeat(64) })).ok)
  t.notOk(decodeAgentFrame(JSON.stringify({ ...base, sha256: 'xyz' })).ok)
  t.notOk(decodeAgentFrame(JSON.stringify({ ...base, status: 'done' })).ok)
  t.notOk(decodeAgentFrame(JSON.stringify({ ...base, jobId: 'not-a-uuid' })).ok)
})

t.test('oversized frames are FRAME_TOO_LARGE before parsing', async (t) => {
  const big = JSON.stringify({ ...hello, hostname: 'x'.repeat(MAX_FRAME_BYTES) })
  const r = decodeAgentFrame(Buffer.from(big))
  t.equal(r.ok ? 'ok' : r.code, 'FRAME_TOO_LARGE')
})

t.test('restore jobs travel in job.run; status and progress frames carry their kind', async (t) => {
  const job = {
    kind: 'restore', jobId: randomUUID(), backupId: randomUUID(), serverId: randomUUID(),
    backup: { type: 'database', compression: 'gzip', encrypted: false, sha256: 'b'.repeat(64), sizeBytes: 10, engine: 'postgresql', databases: ['shop'] },
    archive: { localPath: null, objectKey: 'a/b.sql.gz', destination: null },
    database: { connection: { engine: 'postgresql', host: '127.0.0.1' }, sourceDatabase: null, targetDatabase: 'shop_copy' },
    targetPath: null, replaceExisting: false, timeoutSeconds: 60, createdAt: new Date().toISOString(),
  }
  t.ok(decodeCoordinatorFrame(JSON.stringify({ type: 'job.run', id: 'r1', job })).ok)
  t.notOk(decodeCoordinatorFrame(JSON.stringify({ type: 'job.run', id: 'r1', job: { ...job, targetPath: 'relative/path' } })).ok, 'targetPath must be absolute')
  t.notOk(decodeCoordinatorFrame(JSON.stringify({ type: 'job.run', id: 'r1', job: { ...job, database: { ...job.database, connection: { engine: 'postgresql', dbname: 'x' } } } })).ok, 'no extra connection fields')
  const status = { type: 'job.status', id: 's1', jobId: randomUUID(), status: 'failed', offsiteStatus: null, at: new Date().toISOString(), error: { code: 'DATABASE_EXISTS', message: 'x' } }
  t.ok(decodeAgentFrame(JSON.stringify({ ...status, kind: 'restore' })).ok)
  t.ok(decodeAgentFrame(JSON.stringify(status)).ok, 'no kind: a backup (older agents)')
  t.notOk(decodeAgentFrame(JSON.stringify({ ...status, kind: 'snapshot' })).ok)
  t.ok(decodeAgentFrame(JSON.stringify({ type: 'job.progress', id: 'p1', jobId: randomUUID(), kind: 'restore', bytes: 1, bytesPerSecond: 1, phase: 'downloading' })).ok)
})
