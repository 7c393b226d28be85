import t from 'tap'
import path from 'node:path'
import { mkdir, writeFile } from 'node:fs/promises'
import { randomUUID } from 'node:crypto'
import type { BackupJob } from '@cloudpilot/protocol'
import { archiveExtension, backupObjectKey } from '@cloudpilot/protocol'
import { createRunBackup } from '../src/backup/run-backup.ts'
import { PG, backupContext, createPgDatabase, filesUnder, localDestination, psql, rand, run, serviceSkip, tempDir } from './helpers/backup-fixtures.ts'

const pgSkip = await serviceSkip('PostgreSQL', PG.port)

function fullJob (source: BackupJob['source'], dest: string): BackupJob {
  const jobId = randomUUID()
  const serverId = randomUUID()
  const planId = randomUUID()
  const createdAt = new Date()
  return {
    kind: 'backup', jobId, planId, serverId, type: 'full', source, compression: 'gzip', encryption: null, keepLocal: false,
    destination: localDestination(dest),
    objectKey: backupObjectKey({ serverId, planId, backupId: jobId, createdAt, extension: archiveExtension('full', 'gzip', false) }),
    timeoutSeconds: 600, createdAt: createdAt.toISOString(),
  }
}

t.test('a database whose name is not a plain file name gets a db-<n> folder, mapped in the manifest', { skip: pgSkip }, async (t) => {
  const odd = await createPgDatabase(t, `cp full/${rand()} "x"`)
  await psql(odd, 'CREATE TABLE t (x int); INSERT INTO t VALUES (42);')
  const site = await tempDir(t)
  await writeFile(path.join(site, 'index.html'), 'hi\n')
  const dest = await tempDir(t)
  const job = fullJob({ paths: [site], database: { engine: 'postgresql', ...PG, databases: [odd] } }, dest)
  const result = await createRunBackup()(job, await backupContext(t))
  t.match(result.manifest, { type: 'full', engine: 'postgresql', databases: [odd], paths: [site] })
  const file = path.join(dest, job.objectKey)
  const manifest = JSON.parse(await run('tar', ['-xzOf', file, 'cloudpilot/manifest.json']))
  t.same(manifest.databases, [{ name: odd, dir: 'db-1' }])
  t.match(await run('tar', ['-xzOf', file, 'cloudpilot/databases/db-1/part-000001.sql']), 'COPY public.t (x) FROM stdin;\n42\n')
})

t.test('a failing dump fails the whole archive: nothing is published', { skip: pgSkip }, async (t) => {
  const site = await tempDir(t)
  await writeFile(path.join(site, 'a.txt'), 'a\n')
  const dest = await tempDir(t)
  const job = fullJob({ paths: [site], database: { engine: 'postgresql', ...PG, databases: [`cp_missing_${rand()}`] } }, dest)
  const err = await createRunBackup()(job, await backupContext(t)).catch((e: unknown) => e)
  t.match(err, { code: 'SOURCE_NOT_FOUND' })
  t.same(await filesUnder(dest), [], 'no object, no part file')
})

t.test('a missing path fails before any dump runs', async (t) => {
  const dest = await tempDir(t)
  const spawned: string[] = []
  const missing = path.join(await tempDir(t), 'not-here')
  const job = fullJob({ paths: [missing], database: { engine: 'postgresql', ...PG, databases: ['x'] } }, dest)
  const err = await createRunBackup({ onSpawn: ({ file }) => { spawned.push(file) } })(job, await backupContext(t)).catch((e: unknown) => e)
  t.match(err, { code: 'SOURCE_NOT_FOUND' })
  t.match((err as Error).message, missing)
  t.same(spawned.filter((f) => /pg_dump$/.test(f)), [], 'pg_dump never started')
})

t.test('/cloudpilot cannot be part of a full source (the archive\'s own folder)', async (t) => {
  const dest = await tempDir(t)
  await mkdir(dest, { recursive: true })
  const err = await createRunBackup()(fullJob({ paths: ['/cloudpilot'], database: { engine: 'postgresql', databases: ['x'] } }, dest), await backupContext(t)).catch((e: unknown) => e)
  t.match(err, { code: 'VALIDATION_FAILED' })
})
