import t from 'tap'
import { buffer } from 'node:stream/consumers'
import { Readable } from 'node:stream'
import { openDestination } from '@cloudpilot/storage'
import { chown } from 'node:fs/promises'
import { startCoordinator, startAgent, waitOnline, freePort, tempDir } from '../coordinator/test/helpers/processes.ts'
import { psql, mysql, tempPostgresDatabase, randomName } from '../coordinator/test/helpers/databases.ts'
import { waitFor } from '../coordinator/test/helpers/wait-for.ts'
import { s3, createS3Destination, createPlan, completedBackup, restore, run, watchBackup } from './helpers.ts'

// The restore table of the product: every code a restore can end with, against real servers.
const bucket = await s3(t)
const coordinator = await startCoordinator(t)
const agent = await startAgent(t, coordinator)
await waitOnline(coordinator, agent.serverId)
const destinationId = await createS3Destination(coordinator, bucket)
const PG_CONN = { engine: 'postgresql', host: '127.0.0.1', port: 5432, username: 'postgres' }

const source = await tempPostgresDatabase(t, 'cp_src')
await psql(source.name, 'create table items (id serial primary key, name text); insert into items (name) select md5(g::text) from generate_series(1, 2000) g;')
const planId = await createPlan(coordinator, { serverId: agent.serverId, type: 'database', destinationId, source: { ...PG_CONN, databases: [source.name] } })
const backup = await completedBackup(coordinator, planId)

async function pgExists (name: string): Promise<boolean> {
  return await psql('postgres', `select count(*) from pg_database where datname = '${name.replace(/'/g, "''")}'`) === '1'
}

async function bucketDriver () {
  return await openDestination({ type: 's3', config: { bucket: bucket.bucket, region: bucket.region, endpoint: bucket.endpoint, forcePathStyle: true }, credentials: { accessKeyId: bucket.accessKeyId, secretAccessKey: bucket.secretAccessKey } }, { allowPrivateEndpoints: true })
}

t.test('SOURCE_NOT_COMPLETED: a backup that did not complete cannot be restored', async (t) => {
  const badPlan = await createPlan(coordinator, { serverId: agent.serverId, type: 'database', destinationId, source: { ...PG_CONN, databases: [randomName('cp_missing')] } })
  const run = await coordinator.api.post(`/api/v1/plans/${badPlan}/run`)
  const { final } = await watchBackup(coordinator, run.body.id)
  t.equal(final.status, 'failed')
  const r = await coordinator.api.post(`/api/v1/backups/${final.id}/restore`, { targetDatabase: 'x' })
  t.equal(r.status, 409)
  t.equal(r.body.error.code, 'SOURCE_NOT_COMPLETED')
  t.match(r.body.error.message, 'failed')
  t.match(r.body.error.hint, 'completed')
  const listed = await coordinator.api.get(`/api/v1/restores?backupId=${final.id}`)
  t.same(listed.body.items, [], 'no restore recorded')
})

t.test('TARGET_UNREACHABLE: the target server\'s agent is not connected (refused, nothing started)', async (t) => {
  const other = await startAgent(t, coordinator)
  await waitOnline(coordinator, other.serverId)
  await other.stop()
  const r = await waitFor('target seen as disconnected', async () => {
    const res = await coordinator.api.post(`/api/v1/backups/${backup.id}/restore`, { targetServerId: other.serverId, targetDatabase: randomName('cp_x') })
    return res.status === 201 ? false : res
  })
  t.equal(r.status, 400)
  t.equal(r.body.error.code, 'TARGET_UNREACHABLE')
  t.match(r.body.error.hint, /agent/)
})

t.test('TARGET_UNREACHABLE: the target database server does not answer; nothing was written', async (t) => {
  const target = randomName('cp_x')
  const r = await restore(coordinator, backup.id, { targetDatabase: target, connection: { host: '127.0.0.1', port: await freePort() } })
  t.equal(r.status, 'failed')
  t.equal(r.error.code, 'TARGET_UNREACHABLE')
  t.match(r.error.message, /Nothing was written to the target/)
  t.equal(r.details.targetMayBePartial, false)
})

t.test('INSUFFICIENT_PRIVILEGES: a PostgreSQL user without CREATEDB (checked before anything is written)', async (t) => {
  const role = randomName('cp_role')
  await psql('postgres', `create role ${role} login`)
  t.teardown(() => psql('postgres', `drop role if exists ${role}`))
  const target = randomName('cp_x')
  const r = await restore(coordinator, backup.id, { targetDatabase: target, connection: { username: role } })
  t.equal(r.status, 'failed')
  t.equal(r.error.code, 'INSUFFICIENT_PRIVILEGES')
  t.match(r.error.message, /CREATEDB/)
  t.match(r.error.hint, /CREATEDB/)
  t.same(r.connection, { ...PG_CONN, username: role, hasPassword: false }, 'the request overrides the plan\'s connection field by field')
  t.notOk(await pgExists(target))
})

t.test('INSUFFICIENT_PRIVILEGES and ACCESS_DENIED on MariaDB: a user that may not create databases, and a wrong password', async (t) => {
  const src = randomName('cp_mysrc')
  await mysql(`create database \`${src}\``)
  t.teardown(() => mysql(`drop database if exists \`${src}\``))
  await mysql('create table items (id int primary key); insert into items select seq from seq_1_to_10;', src)
  const myPlan = await createPlan(coordinator, { serverId: agent.serverId, type: 'database', destinationId, source: { engine: 'mysql', host: '127.0.0.1', port: 3306, username: 'root', databases: [src] } })
  const b = await completedBackup(coordinator, myPlan)
  const user = randomName('cp_user')
  const password = 'pa ss\'"#;word'
  const pw = password.replace(/\\/g, '\\\\').replace(/'/g, "\\'")
  await mysql(`create user '${user}'@'localhost' identified by '${pw}'; create user '${user}'@'127.0.0.1' identified by '${pw}'; grant select on *.* to '${user}'@'localhost'; grant select on *.* to '${user}'@'127.0.0.1';`)
  t.teardown(() => mysql(`drop user if exists '${user}'@'localhost', '${user}'@'127.0.0.1'`))
  const target = randomName('cp_x')
  t.teardown(() => mysql(`drop database if exists \`${target}\``))

  const denied = await restore(coordinator, b.id, { targetDatabase: target, connection: { username: user, password } })
  t.equal(denied.status, 'failed')
  t.equal(denied.error.code, 'INSUFFICIENT_PRIVILEGES', denied.error.message)
  t.match(denied.error.hint, /GRANT/)
  t.equal(denied.connection.hasPassword, true)
  t.notMatch(JSON.stringify(denied), password, 'the password is never returned')
  t.equal(denied.details.targetMayBePartial, false, 'the database was never created')

  const wrong = await restore(coordinator, b.id, { targetDatabase: target, connection: { username: user, password: 'not the password' } })
  t.equal(wrong.status, 'failed')
  t.equal(wrong.error.code, 'ACCESS_DENIED')
  t.match(wrong.error.hint, /username and password/)
  t.notMatch(JSON.stringify(wrong), 'not the password')
  t.notMatch(await agent.log(), 'not the password', 'nor logged by the agent')
  t.notMatch(await coordinator.log(), 'not the password', 'nor by the coordinator')
})

t.test('CHECKSUM_MISMATCH: an object replaced at the destination is refused before anything is written', async (t) => {
  const b = await completedBackup(coordinator, planId)
  const driver = await bucketDriver()
  t.teardown(() => driver.close())
  const original = await buffer(await driver.get(b.objectKey))
  const tampered = Buffer.from(original)
  tampered[tampered.length - 20] = (tampered[tampered.length - 20] ?? 0) ^ 0xff
  await driver.put(b.objectKey, Readable.from([tampered]))
  const target = randomName('cp_x')
  const r = await restore(coordinator, b.id, { targetDatabase: target })
  t.equal(r.status, 'failed')
  t.equal(r.error.code, 'CHECKSUM_MISMATCH')
  t.match(r.error.message, b.sha256)
  t.match(r.error.message, /Nothing was written to the target/)
  t.notOk(await pgExists(target), 'the target database was not even created')
})

t.test('DOWNLOAD_FAILED: the object is gone from the destination', async (t) => {
  const b = await completedBackup(coordinator, planId)
  const driver = await bucketDriver()
  t.teardown(() => driver.close())
  await driver.delete(b.objectKey)
  const target = randomName('cp_x')
  const r = await restore(coordinator, b.id, { targetDatabase: target })
  t.equal(r.status, 'failed')
  t.equal(r.error.code, 'DOWNLOAD_FAILED')
  t.match(r.error.message, 'OBJECT_NOT_FOUND')
  t.match(r.error.message, /Nothing was written to the target/)
  t.notOk(await pgExists(target))
})

t.test('RESTORE_FAILED mid-way says the target database may be partially written and how to drop it', async (t) => {
  // A table in a tablespace that no longer exists when the backup is restored: psql fails in the middle of the dump.
  const space = randomName('cp_space')
  const location = await tempDir(t, 'cp-tablespace')
  await chown(location, Number((await run('id', ['-u', 'postgres'])).stdout.trim()), Number((await run('id', ['-g', 'postgres'])).stdout.trim()))
  await psql('postgres', `create tablespace ${space} location '${location}'`)
  t.teardown(() => psql('postgres', `drop tablespace if exists ${space}`))
  const db = await tempPostgresDatabase(t, 'cp_ts')
  await psql(db.name, `create table before (id int); insert into before values (1); create table placed (id int) tablespace ${space};`)
  const tsPlan = await createPlan(coordinator, { serverId: agent.serverId, type: 'database', destinationId, source: { ...PG_CONN, databases: [db.name] } })
  const b = await completedBackup(coordinator, tsPlan)
  await psql(db.name, 'drop table placed')
  await psql('postgres', `drop tablespace ${space}`)

  const partial = randomName('cp_partial')
  t.teardown(() => psql('postgres', `drop database if exists "${partial}" with (force)`))
  const failed = await restore(coordinator, b.id, { targetDatabase: partial })
  t.equal(failed.status, 'failed')
  t.equal(failed.error.code, 'RESTORE_FAILED', failed.error.message)
  t.match(failed.error.message, new RegExp(`ERROR: .*${space}`), 'psql\'s own error')
  t.match(failed.error.message, new RegExp(`"${partial}" may be partially written`))
  t.match(failed.error.hint, `DROP DATABASE "${partial}"`)
  t.equal(failed.details.targetMayBePartial, true)
  t.ok(await pgExists(partial), 'the created database is there to clean up, as the error says')
})

t.test('replacing a PostgreSQL database in place: a restore that fails mid-way leaves the old database as it was', async (t) => {
  // The same failing dump (a table in a tablespace that is gone), restored over a live database with replace.
  const space = randomName('cp_space')
  const location = await tempDir(t, 'cp-tablespace')
  await chown(location, Number((await run('id', ['-u', 'postgres'])).stdout.trim()), Number((await run('id', ['-g', 'postgres'])).stdout.trim()))
  await psql('postgres', `create tablespace ${space} location '${location}'`)
  t.teardown(() => psql('postgres', `drop tablespace if exists ${space}`))
  const db = await tempPostgresDatabase(t, 'cp_live')
  await psql(db.name, `create table placed (id int) tablespace ${space};`)
  const tsPlan = await createPlan(coordinator, { serverId: agent.serverId, type: 'database', destinationId, source: { ...PG_CONN, databases: [db.name] } })
  const b = await completedBackup(coordinator, tsPlan)
  await psql(db.name, `drop table placed; create table live (id int); insert into live select generate_series(1, 42);`)
  await psql('postgres', `drop tablespace ${space}`)
  const stagingBefore = await psql('postgres', "select count(*) from pg_database where datname like 'cp\\_restore\\_%'")

  const failed = await restore(coordinator, b.id, { replaceExisting: true })
  t.equal(failed.status, 'failed')
  t.equal(failed.error.code, 'RESTORE_FAILED', failed.error.message)
  t.match(failed.error.message, /Nothing was written to the target/, 'the old database was never dropped')
  t.equal(failed.details.targetMayBePartial, false)
  t.equal(await psql(db.name, 'select count(*) from live'), '42', 'the live database keeps every row')
  t.equal(await psql('postgres', "select count(*) from pg_database where datname like 'cp\\_restore\\_%'"), stagingBefore, 'the staging database was dropped')

  // A replace that succeeds swaps the restored copy in under the same name.
  const good = await tempPostgresDatabase(t, 'cp_swap')
  await psql(good.name, 'create table items (id int); insert into items select generate_series(1, 7);')
  const goodPlan = await createPlan(coordinator, { serverId: agent.serverId, type: 'database', destinationId, source: { ...PG_CONN, databases: [good.name] } })
  const gb = await completedBackup(coordinator, goodPlan)
  await psql(good.name, 'insert into items values (8); create table later (id int);')
  const replaced = await restore(coordinator, gb.id, { replaceExisting: true })
  t.equal(replaced.status, 'completed', JSON.stringify(replaced.error))
  t.equal(await psql(good.name, 'select count(*) from items'), '7', 'the backup\'s rows, under the same name')
  t.equal(await psql(good.name, "select count(*) from pg_tables where tablename = 'later'"), '0', 'nothing of the replaced database remains')
  t.equal(await psql('postgres', "select count(*) from pg_database where datname like 'cp\\_restore\\_%'"), stagingBefore, 'no staging database left behind')
})

t.test('validation: parts and targets must fit the backup', async (t) => {
  const cases: Array<[Record<string, unknown>, RegExp]> = [
    [{ targetPath: '/tmp/x' }, /targetPath applies to restores of files/],
    [{ parts: ['files'] }, /no files/],
    [{ sourceDatabase: 'nope' }, /no database "nope"/],
    [{ targetDatabase: 'a\u0000b' }, /targetDatabase/],
  ]
  for (const [body, message] of cases) {
    const r = await coordinator.api.post(`/api/v1/backups/${backup.id}/restore`, body)
    t.equal(r.status, 400, JSON.stringify(body))
    t.equal(r.body.error.code, 'VALIDATION_FAILED')
    t.match(r.body.error.message, message)
  }
  const missing = await coordinator.api.post('/api/v1/backups/00000000-0000-4000-8000-000000000000/restore', {})
  t.equal(missing.status, 404)
  const unknownRestore = await coordinator.api.get('/api/v1/restores/00000000-0000-4000-8000-000000000000')
  t.equal(unknownRestore.status, 404)
})
