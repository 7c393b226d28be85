import t, { type Test } from 'tap'
import { randomUUID } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { decodeAgentFrame, decodeCoordinatorFrame, type BackupDeleteFrame } from '@cloudpilot/protocol'
import { deleteBackupCopies } from '../src/backup-deleter.ts'

/** Retention on the agent: deletes only its own copies of the named backup, and what is gone counts as deleted. */

async function sandbox (t: Test): Promise<{ spool: string, outside: string, dest: string }> {
  const root = await mkdtemp(path.join(os.tmpdir(), 'cp-deleter-'))
  t.teardown(() => rm(root, { recursive: true, force: true }))
  const spool = path.join(root, 'spool', 'server')
  const outside = path.join(root, 'outside')
  const dest = path.join(root, 'dest')
  for (const d of [spool, outside, dest]) await mkdir(d, { recursive: true })
  return { spool, outside, dest }
}

const serverId = randomUUID()
const frame = (over: Partial<BackupDeleteFrame>): BackupDeleteFrame => ({ type: 'backup.delete', id: 'd1', backupId: randomUUID(), localPath: null, objectKey: null, destination: null, ...over })

t.test('the spool copy and its manifest are deleted; already gone counts as deleted', async (t) => {
  const { spool } = await sandbox(t)
  const f = frame({})
  const file = path.join(spool, `${f.backupId}.sql.gz`)
  await writeFile(file, 'x')
  await writeFile(`${file}.manifest.json`, '{}')
  t.same(await deleteBackupCopies({ ...f, localPath: file }, { spoolDir: spool, serverId }), { localCopy: { ok: true }, object: null })
  t.notOk(existsSync(file))
  t.notOk(existsSync(`${file}.manifest.json`))
  t.same(await deleteBackupCopies({ ...f, localPath: file }, { spoolDir: spool, serverId }), { localCopy: { ok: true }, object: null }, 'again: nothing left, still ok')
})

t.test('nothing outside the spool directory, or of another backup, is deleted', async (t) => {
  const { spool, outside } = await sandbox(t)
  const f = frame({})
  const victim = path.join(outside, `${f.backupId}.sql.gz`)
  await writeFile(victim, 'precious')
  const other = path.join(spool, `${randomUUID()}.sql.gz`)
  await writeFile(other, 'another backup')
  await symlink(outside, path.join(spool, 'link'))
  for (const localPath of [victim, other, path.join(spool, '..', '..', 'outside', `${f.backupId}.sql.gz`), path.join(spool, 'link', `${f.backupId}.sql.gz`), '/etc/passwd']) {
    const r = await deleteBackupCopies({ ...f, localPath }, { spoolDir: spool, serverId })
    t.equal(r.localCopy?.ok, false, localPath)
    t.equal(r.localCopy?.error?.code, 'FORBIDDEN')
  }
  t.ok(existsSync(victim))
  t.ok(existsSync(other))
})

t.test('objects of a local destination: only this server\'s keys of that backup', async (t) => {
  const { spool, dest } = await sandbox(t)
  const f = frame({})
  const key = `${serverId}/plan/2024/05/01/20240501T000000Z-${f.backupId}.tar.gz`
  await mkdir(path.dirname(path.join(dest, key)), { recursive: true })
  await writeFile(path.join(dest, key), 'archive')
  await writeFile(path.join(dest, `${key}.manifest.json`), '{}')
  const destination = { type: 'local', config: { path: dest }, credentials: {} }
  const foreign = `${randomUUID()}/plan/2024/05/01/20240501T000000Z-${f.backupId}.tar.gz`
  t.match(await deleteBackupCopies({ ...f, objectKey: foreign, destination }, { spoolDir: spool, serverId }), { object: { ok: false, error: { code: 'FORBIDDEN' } } })
  t.match(await deleteBackupCopies({ ...f, objectKey: `${serverId}/../../etc/${f.backupId}`, destination }, { spoolDir: spool, serverId }), { object: { ok: false, error: { code: 'VALIDATION_FAILED' } } })
  t.ok(existsSync(path.join(dest, key)))
  t.same(await deleteBackupCopies({ ...f, objectKey: key, destination }, { spoolDir: spool, serverId }), { localCopy: null, object: { ok: true } })
  t.notOk(existsSync(path.join(dest, key)))
  t.notOk(existsSync(path.join(dest, `${key}.manifest.json`)))
})

t.test('the frames are validated on both sides', async (t) => {
  const ok = decodeCoordinatorFrame(JSON.stringify(frame({ localPath: '/tmp/x' })))
  t.equal(ok.ok, true)
  const bad = decodeCoordinatorFrame(JSON.stringify({ ...frame({}), backupId: 'not-a-uuid' }))
  t.equal(bad.ok ? 'ok' : bad.code, 'FRAME_INVALID')
  const result = { type: 'backup.delete.result', id: 'r1', requestId: 'd1', backupId: randomUUID(), localCopy: { ok: false, error: { code: 'FORBIDDEN', message: 'no' } }, object: null }
  t.equal(decodeAgentFrame(JSON.stringify(result)).ok, true)
  t.equal(decodeAgentFrame(JSON.stringify({ ...result, localCopy: 'gone' })).ok, false)
  t.equal(decodeCoordinatorFrame(JSON.stringify(result)).ok, false, 'a result is not a coordinator frame')
})
