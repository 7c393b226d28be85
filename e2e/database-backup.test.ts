import t from 'tap'
import path from 'node:path'
import { createHash } from 'node:crypto'
import { readFile, stat } from 'node:fs/promises'
import { buffer } from 'node:stream/consumers'
import { openDestination } from '@cloudpilot/storage'
import { startCoordinator, startAgent, waitOnline, tempDir } from '../coordinator/test/helpers/processes.ts'
import { psql, mysql, tempPostgresDatabase, tempMysqlDatabase, randomName } from '../coordinator/test/helpers/databases.ts'
import { s3, createS3Destination, createPlan, downloadBackup, gunzipInto, watchBackup } from './helpers.ts'

const ROWS = 30000

t.test('PostgreSQL backup streamed to S3, then restored by hand with gunzip | psql', async (t) => {
  const bucket = await s3(t)
  const coordinator = await startCoordinator(t)
  const agent = await startAgent(t, coordinator)
  await waitOnline(coordinator, agent.serverId)
  const source = await tempPostgresDatabase(t, 'cp_src')
  await psql(source.name, `create table items (id serial primary key, name text not null, payload bytea, note text);
    insert into items (name, payload, note) select 'item ' || g || ' — ünïcødé ✓', decode(md5(g::text), 'hex'), repeat(md5(g::text), 8) from generate_series(1, ${ROWS}) g;
    create view big_items as select * from items where id > 100;`)
  // Rate-limited so that the in-between states can be watched.
  const destinationId = await createS3Destination(coordinator, bucket, { config: { rateLimitBytesPerSecond: 256 * 1024 } })
  const planId = await createPlan(coordinator, {
    serverId: agent.serverId, type: 'database', destinationId,
    source: { engine: 'postgresql', host: '127.0.0.1', port: 5432, username: 'postgres', databases: [source.name] },
  })

  const run = await coordinator.api.post(`/api/v1/plans/${planId}/run`)
  t.equal(run.status, 201)
  t.equal(run.body.status, 'pending')
  t.equal(run.body.trigger, 'manual')
  const watched = await watchBackup(coordinator, run.body.id)
  const b = watched.final
  t.equal(b.status, 'completed', JSON.stringify(b.error))
  t.same(['pending', ...watched.statuses].filter((s, i, a) => a.indexOf(s) === i), ['pending', 'in_progress', 'completed'])
  t.same(watched.offsite.filter((s) => s !== null), ['uploading', 'uploaded'])
  t.ok(watched.sawProgress, 'progress (bytes, rate) was reported while running')
  t.ok(b.sizeBytes > 100_000)
  t.match(b.sha256, /^[0-9a-f]{64}$/)
  t.match(b.objectKey, new RegExp(`^${agent.serverId}/${planId}/\\d{4}/\\d{2}/\\d{2}/\\d{8}T\\d{6}Z-${b.id}\\.sql\\.gz$`))
  t.equal(b.localPath, null, 'no local copy when the plan streams to a destination')
  t.equal(b.offsiteStatus, 'uploaded')
  t.ok(new Date(b.expiresAt).getTime() - new Date(b.finishedAt).getTime() === 30 * 86400_000, 'expires after the 30-day default retention')

  t.comment(`backup ran ${new Date(b.finishedAt).getTime() - new Date(b.startedAt).getTime()} ms for ${b.sizeBytes} bytes`)

  // The object and its manifest are in the bucket, exactly as reported.
  const driver = await openDestination({ type: 's3', config: { bucket: bucket.bucket, region: bucket.region, endpoint: bucket.endpoint, forcePathStyle: true }, credentials: { accessKeyId: bucket.accessKeyId, secretAccessKey: bucket.secretAccessKey } }, { allowPrivateEndpoints: true })
  t.teardown(() => driver.close())
  const stored = await buffer(await driver.get(b.objectKey))
  t.equal(stored.length, b.sizeBytes, 'object stored under its key with the reported size')
  t.equal(createHash('sha256').update(stored).digest('hex'), b.sha256)
  const manifest = JSON.parse((await buffer(await driver.get(`${b.objectKey}.manifest.json`))).toString('utf8'))
  t.match(manifest, { type: 'database', engine: 'postgresql', databases: [source.name], sha256: b.sha256, sizeBytes: b.sizeBytes })

  // Download is the archive as made, and it restores with the stock tools.
  const dir = await tempDir(t, 'cp-dl')
  const file = path.join(dir, b.fileName)
  const dl = await downloadBackup(coordinator, b.id, file)
  t.equal(dl.status, 200)
  t.equal(dl.sha256, b.sha256)
  t.equal(dl.headers.get('x-checksum-sha256'), b.sha256)
  t.match(dl.headers.get('content-disposition'), b.fileName)
  const target = randomName('cp_restore')
  await psql('postgres', `create database "${target}"`)
  t.teardown(() => psql('postgres', `drop database if exists "${target}" with (force)`))
  const restored = await gunzipInto(file, 'psql', ['-h', '127.0.0.1', '-U', 'postgres', '-d', target, '-v', 'ON_ERROR_STOP=1', '-q', '-X'])
  t.equal(restored.code, 0, restored.stderr)
  const checksum = `select count(*) || ':' || md5(string_agg(id || name || encode(payload, 'hex') || note, ',' order by id)) from items`
  t.equal(await psql(target, checksum), await psql(source.name, checksum), 'rows restored byte for byte')
  t.equal(await psql(target, 'select count(*) from big_items'), String(ROWS - 100))
})

t.test('MariaDB backup to S3 with a local copy, restored by hand with gunzip | mysql', async (t) => {
  const bucket = await s3(t)
  const coordinator = await startCoordinator(t)
  const agent = await startAgent(t, coordinator)
  await waitOnline(coordinator, agent.serverId)
  const source = await tempMysqlDatabase(t, 'cp_src')
  await mysql(`create table items (id int primary key auto_increment, name varchar(200) character set utf8mb4, payload blob);
    insert into items (name, payload) select concat('item ', seq, ' ünïcødé ✓'), unhex(md5(seq)) from seq_1_to_${ROWS};`, source.name)
  const destinationId = await createS3Destination(coordinator, bucket)
  const planId = await createPlan(coordinator, {
    serverId: agent.serverId, type: 'database', destinationId, keepLocal: true,
    source: { engine: 'mysql', host: '127.0.0.1', port: 3306, username: 'root', databases: [source.name] },
  })
  const run = await coordinator.api.post(`/api/v1/plans/${planId}/run`)
  const { final: b } = await watchBackup(coordinator, run.body.id)
  t.equal(b.status, 'completed', JSON.stringify(b.error))
  t.equal(b.offsiteStatus, 'uploaded')
  t.ok(b.localPath.startsWith(path.join(agent.spoolDir, agent.serverId) + '/'), `local copy in the spool: ${b.localPath}`)
  const local = await readFile(b.localPath)
  t.equal(local.length, b.sizeBytes)
  t.equal(createHash('sha256').update(local).digest('hex'), b.sha256)
  t.equal((await stat(b.localPath)).mode & 0o777, 0o600, 'local copy readable by the agent user only')

  const dir = await tempDir(t, 'cp-dl')
  const file = path.join(dir, b.fileName)
  const dl = await downloadBackup(coordinator, b.id, file)
  t.equal(dl.sha256, b.sha256)
  const target = randomName('cp_restore')
  await mysql(`create database \`${target}\``)
  t.teardown(() => mysql(`drop database if exists \`${target}\``))
  const restored = await gunzipInto(file, 'mysql', ['-h', '127.0.0.1', '-u', 'root', target])
  t.equal(restored.code, 0, restored.stderr)
  const checksum = "select concat(count(*), ':', md5(group_concat(id, name, hex(payload) order by id separator ','))) from items"
  await mysql('set session group_concat_max_len = 1073741824')
  t.equal(await mysql(`set session group_concat_max_len = 1073741824; ${checksum}`, target), await mysql(`set session group_concat_max_len = 1073741824; ${checksum}`, source.name))
})
