import t from 'tap'
import path from 'node:path'
import { existsSync } from 'node:fs'
import { lstat, mkdir, readdir, readFile, readlink, stat, symlink, utimes, writeFile, chmod } from 'node:fs/promises'
import { randomBytes } from 'node:crypto'
import { buffer } from 'node:stream/consumers'
import { openDestination } from '@cloudpilot/storage'
import { startCoordinator, startAgent, waitOnline, tempDir } from '../coordinator/test/helpers/processes.ts'
import { psql, mysql, tempPostgresDatabase, tempMysqlDatabase, randomName } from '../coordinator/test/helpers/databases.ts'
import { waitFor } from '../coordinator/test/helpers/wait-for.ts'
import { s3, createS3Destination, createPlan, completedBackup, downloadBackup, restore, run, watchBackup } from './helpers.ts'

const bucket = await s3(t)
const coordinator = await startCoordinator(t)
const agent = await startAgent(t, coordinator)
await waitOnline(coordinator, agent.serverId)

const PG_CHECKSUM = 'select count(*) || \':\' || md5(string_agg(id || name, \',\' order by id)) from items'

/** A small site: a big file, a mode, an mtime, a symlink, an empty directory and a file the plan excludes. */
async function makeSite (tt: Parameters<typeof tempDir>[0]): Promise<{ site: string, big: Buffer, mtime: Date }> {
  const site = path.join(await tempDir(tt, 'cp-site'), 'var', 'www', 'shop')
  await mkdir(path.join(site, 'uploads', 'empty'), { recursive: true })
  const big = randomBytes(2 * 1024 * 1024)
  await writeFile(path.join(site, 'uploads', 'photo.bin'), big)
  await writeFile(path.join(site, 'config.php'), '<?php $db = "shop";\n')
  await chmod(path.join(site, 'config.php'), 0o640)
  const mtime = new Date('2024-02-29T12:34:56Z')
  await utimes(path.join(site, 'config.php'), mtime, mtime)
  await symlink('uploads/photo.bin', path.join(site, 'latest'))
  await writeFile(path.join(site, 'debug.log'), 'excluded\n')
  return { site, big, mtime }
}

t.test('a full PostgreSQL site backup: one .tar.gz with the files, a manifest and the dumps, restorable by hand and through the API', async (t) => {
  const { site, big, mtime } = await makeSite(t)
  const db = await tempPostgresDatabase(t, 'cp_shop')
  // ~7 MB of SQL: the dump spans two parts of 4 MiB.
  await psql(db.name, `create table items (id serial primary key, name text not null);
    insert into items (name) select 'item ' || g || ' ' || md5(g::text) || md5((g * 3)::text) from generate_series(1, 90000) g;`)
  const destinationId = await createS3Destination(coordinator, bucket)
  const planId = await createPlan(coordinator, {
    serverId: agent.serverId, type: 'full', destinationId,
    source: { paths: [site], exclude: ['*.log'], database: { engine: 'postgresql', host: '127.0.0.1', port: 5432, username: 'postgres', databases: [db.name] } },
  })
  const b = await completedBackup(coordinator, planId)
  t.equal(b.type, 'full')
  t.match(b.fileName, /\.tar\.gz$/)

  const driver = await openDestination({ type: 's3', config: { bucket: bucket.bucket, region: bucket.region, endpoint: bucket.endpoint, forcePathStyle: true }, credentials: { accessKeyId: bucket.accessKeyId, secretAccessKey: bucket.secretAccessKey } }, { allowPrivateEndpoints: true })
  t.teardown(() => driver.close())
  const outer = JSON.parse((await buffer(await driver.get(`${b.objectKey}.manifest.json`))).toString('utf8'))
  t.match(outer, { type: 'full', engine: 'postgresql', databases: [db.name], paths: [site], sha256: b.sha256 })

  // The archive as a user downloads it, read with the stock tar.
  const dir = await tempDir(t, 'cp-full-dl')
  const file = path.join(dir, b.fileName)
  t.equal((await downloadBackup(coordinator, b.id, file)).sha256, b.sha256)
  const listing = (await run('tar', ['-tzf', file])).stdout.trim().split('\n')
  t.same(listing.slice(0, 4), [
    'cloudpilot/manifest.json',
    'cloudpilot/RESTORE.txt',
    `cloudpilot/databases/${db.name}/part-000001.sql`,
    `cloudpilot/databases/${db.name}/part-000002.sql`,
  ], 'manifest first, then the dump in parts')
  t.ok(listing.includes(`${site.slice(1)}/uploads/photo.bin`), 'the files follow, without their leading /')
  t.notOk(listing.some((e) => e.endsWith('debug.log')), 'exclude globs apply')
  const inner = JSON.parse((await run('tar', ['-xzOf', file, 'cloudpilot/manifest.json'])).stdout)
  t.match(inner, { format: 'cloudpilot-full-backup/1', backupId: b.id, engine: 'postgresql', databases: [{ name: db.name, dir: db.name }], paths: [site], dumpFormat: 'pg_dump plain' })
  t.match((await run('tar', ['-xzOf', file, 'cloudpilot/RESTORE.txt'])).stdout, `tar -xzOf <archive>.tar.gz --wildcards 'cloudpilot/databases/${db.name}/*' | psql`)

  // By hand, as README says: the files with tar, the database with tar -O | psql.
  const byHand = await tempDir(t, 'cp-full-hand')
  const untar = await run('tar', ['-xzf', file, '-C', byHand, '--exclude=cloudpilot'])
  t.equal(untar.code, 0, untar.stderr)
  t.same(await readFile(path.join(byHand, site.slice(1), 'uploads', 'photo.bin')), big)
  t.notOk(existsSync(path.join(byHand, 'cloudpilot')))
  const handDb = randomName('cp_hand')
  t.teardown(() => psql('postgres', `drop database if exists "${handDb}" with (force)`))
  await psql('postgres', `create database "${handDb}"`)
  const piped = await run('sh', ['-c', 'tar -xzOf "$1" --wildcards "cloudpilot/databases/$2/*" | psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres -d "$3"', 'sh', file, db.name, handDb])
  t.equal(piped.code, 0, piped.stderr)
  t.equal(await psql(handDb, PG_CHECKSUM), await psql(db.name, PG_CHECKSUM), 'the parts concatenate to the dump')

  // Through the API: databases under a new name and the files under a new directory, in one restore.
  const target = randomName('cp_full_restored')
  t.teardown(() => psql('postgres', `drop database if exists "${target}" with (force)`))
  const targetPath = path.join(await tempDir(t, 'cp-full-restore'), 'here')
  const r = await restore(coordinator, b.id, { targetDatabase: target, targetPath })
  t.equal(r.status, 'completed', JSON.stringify(r.error))
  t.same(r.parts, ['files', 'databases'])
  t.match(r.details.restored, { databases: [{ source: db.name, target, replaced: false }], files: { targetPath, symlinks: 1 } })
  t.equal(await psql(target, PG_CHECKSUM), await psql(db.name, PG_CHECKSUM))
  const restored = path.join(targetPath, site.slice(1))
  t.same(await readFile(path.join(restored, 'uploads', 'photo.bin')), big)
  t.equal((await stat(path.join(restored, 'config.php'))).mode & 0o777, 0o640, 'mode kept')
  t.equal((await stat(path.join(restored, 'config.php'))).mtime.toISOString(), mtime.toISOString(), 'mtime kept')
  t.equal(await readlink(path.join(restored, 'latest')), 'uploads/photo.bin', 'symlink kept')
  t.ok((await stat(path.join(restored, 'uploads', 'empty'))).isDirectory(), 'empty directory kept')
  t.notOk(existsSync(path.join(targetPath, 'cloudpilot')), 'the archive\'s own folder is not written to the target')

  // Only the files of it, into another directory.
  const filesOnly = path.join(await tempDir(t, 'cp-full-files'), 'x')
  const f = await restore(coordinator, b.id, { parts: ['files'], targetPath: filesOnly })
  t.equal(f.status, 'completed', JSON.stringify(f.error))
  t.equal(f.connection, null)
  t.same(f.details.restored.databases, [])
  t.same(await readFile(path.join(filesOnly, site.slice(1), 'uploads', 'photo.bin')), big)
})

t.test('a full MariaDB backup of two databases to a local destination: by hand with mysql, and one database through the API', async (t) => {
  const { site } = await makeSite(t)
  const one = await tempMysqlDatabase(t, 'cp_one')
  const two = await tempMysqlDatabase(t, 'cp_two')
  await mysql('create table items (id int primary key, name text); insert into items select seq, concat(\'one \', seq) from seq_1_to_500;', one.name)
  await mysql('create table items (id int primary key, name text); insert into items select seq, concat(\'two \', seq) from seq_1_to_800;', two.name)
  const destDir = await tempDir(t, 'cp-full-local')
  const dest = await coordinator.api.post('/api/v1/destinations', { name: 'disk', type: 'local', config: { path: destDir } })
  const planId = await createPlan(coordinator, {
    serverId: agent.serverId, type: 'full', destinationId: dest.body.id,
    source: { paths: [site], database: { engine: 'mysql', host: '127.0.0.1', port: 3306, username: 'root', databases: [one.name, two.name] } },
  })
  const b = await completedBackup(coordinator, planId)
  const file = path.join(destDir, b.objectKey)
  const inner = JSON.parse((await run('tar', ['-xzOf', file, 'cloudpilot/manifest.json'])).stdout)
  t.match(inner, { engine: 'mysql', dumpFormat: 'mysqldump single database', databases: [{ name: one.name }, { name: two.name }] })

  const handDb = randomName('cp_hand')
  t.teardown(() => mysql(`drop database if exists \`${handDb}\``))
  await mysql(`create database \`${handDb}\``)
  const piped = await run('sh', ['-c', 'tar -xzOf "$1" --wildcards "cloudpilot/databases/$2/*" | mysql -h 127.0.0.1 -u root "$3"', 'sh', file, two.name, handDb])
  t.equal(piped.code, 0, piped.stderr)
  t.equal(await mysql('select count(*) from items', handDb), '800', 'a single-database dump: restores into any name')

  const target = randomName('cp_api')
  t.teardown(() => mysql(`drop database if exists \`${target}\``))
  const r = await restore(coordinator, b.id, { parts: ['databases'], sourceDatabase: one.name, targetDatabase: target })
  t.equal(r.status, 'completed', JSON.stringify(r.error))
  t.equal(r.details.restored.archive, 'local-destination', 'a local destination on the same server is read in place')
  t.equal(await mysql('select count(*) from items', target), '500')
  t.equal(r.targetPath, null)
})

t.test('a full plan cannot include /cloudpilot (the archive\'s own folder)', async (t) => {
  const r = await coordinator.api.post('/api/v1/plans', {
    name: 'x', serverId: agent.serverId, type: 'full',
    source: { paths: ['/srv', '/cloudpilot/data'], database: { engine: 'postgresql', databases: ['x'] } },
  })
  t.equal(r.status, 400)
  t.equal(r.body.error.code, 'VALIDATION_FAILED')
  t.match(r.body.error.message, '/cloudpilot/data')
})

t.test('cancelling a full backup mid-dump leaves no process, no object and nothing in the spool', async (t) => {
  const { site } = await makeSite(t)
  const db = await tempPostgresDatabase(t, 'cp_big')
  await psql(db.name, `create table blobs (id serial primary key, body text);
    insert into blobs (body) select string_agg(md5(g::text), '') from generate_series(1, 200000) g group by g % 50000;`)
  const destinationId = await createS3Destination(coordinator, bucket, { config: { rateLimitBytesPerSecond: 256 * 1024 } })
  const planId = await createPlan(coordinator, {
    serverId: agent.serverId, type: 'full', destinationId,
    source: { paths: [site], database: { engine: 'postgresql', host: '127.0.0.1', port: 5432, username: 'postgres', databases: [db.name] } },
  })
  const started = await coordinator.api.post(`/api/v1/plans/${planId}/run`)
  await waitFor('upload under way', async () => {
    const r = await coordinator.api.get(`/api/v1/backups/${started.body.id}`)
    return r.body.status === 'in_progress' && r.body.offsiteStatus === 'uploading' && (r.body.progress?.bytes ?? 0) > 0
  }, 60_000, 50)
  const cancel = await coordinator.api.post(`/api/v1/backups/${started.body.id}/cancel`)
  t.equal(cancel.status, 202)
  const { final } = await watchBackup(coordinator, started.body.id, 30_000)
  t.equal(final.status, 'cancelled')
  const procs: string[] = []
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue
    const cmd = await readFile(`/proc/${name}/cmdline`, 'utf8').catch(() => '')
    if (cmd.includes(db.name) && !cmd.includes('tap')) procs.push(cmd)
  }
  t.same(procs, [], 'pg_dump is gone')
  const spool = path.join(agent.spoolDir, agent.serverId)
  t.same(existsSync(spool) ? (await readdir(spool)).filter((n) => n.includes(started.body.id)) : [], [], 'no temporary file in the spool')
  const objects = await driver(bucket).then(async (d) => { try { return (await d.list(`${agent.serverId}/${planId}/`)).items } finally { await d.close() } })
  t.same(objects, [], 'no object under the plan\'s keys')
  t.ok((await lstat(site)).isDirectory(), 'the source is untouched')
})

async function driver (b: Awaited<ReturnType<typeof s3>>) {
  return await openDestination({ type: 's3', config: { bucket: b.bucket, region: b.region, endpoint: b.endpoint, forcePathStyle: true }, credentials: { accessKeyId: b.accessKeyId, secretAccessKey: b.secretAccessKey } }, { allowPrivateEndpoints: true })
}
