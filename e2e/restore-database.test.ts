import t from 'tap'
import path from 'node:path'
import { existsSync } from 'node:fs'
import { readdir, readFile } from 'node:fs/promises'
import { startCoordinator, startAgent, waitOnline } from '../coordinator/test/helpers/processes.ts'
import { psql, mysql, tempPostgresDatabase, tempMysqlDatabase, randomName } from '../coordinator/test/helpers/databases.ts'
import { waitFor } from '../coordinator/test/helpers/wait-for.ts'
import { s3, createS3Destination, createPlan, completedBackup, restore, watchRestore } from './helpers.ts'

// One coordinator, one agent and one bucket for the whole file: every test restores its own databases.
const bucket = await s3(t)
const coordinator = await startCoordinator(t)
const agent = await startAgent(t, coordinator)
await waitOnline(coordinator, agent.serverId)
const destinationId = await createS3Destination(coordinator, bucket)

const PG_CONN = { engine: 'postgresql', host: '127.0.0.1', port: 5432, username: 'postgres' }
const MY_CONN = { engine: 'mysql', host: '127.0.0.1', port: 3306, username: 'root' }
const PG_CHECKSUM = 'select count(*) || \':\' || md5(string_agg(id || name, \',\' order by id)) from items'
const MY_CHECKSUM = 'set session group_concat_max_len = 1073741824; select concat(count(*), \':\', md5(group_concat(id, name order by id separator \',\'))) from items'

/** A PostgreSQL database created for the test (any name), dropped in teardown. */
async function pgDatabase (tt: Parameters<typeof tempPostgresDatabase>[0], name: string, rows: number): Promise<string> {
  tt.teardown(() => psql('postgres', `drop database if exists "${name.replace(/"/g, '""')}" with (force)`))
  await psql('postgres', `create database "${name.replace(/"/g, '""')}"`)
  await psql(name, `create table items (id serial primary key, name text not null);
    insert into items (name) select 'item ' || g || ' ✓ ${name.replace(/'/g, "''")}' from generate_series(1, ${rows}) g;
    create function double_it(x int) returns int language sql as $$ select x * 2 $$;
    create view first_items as select * from items where id <= 10;`)
  return name
}

function dropPgLater (tt: { teardown: (fn: () => Promise<unknown>) => void }, name: string): void {
  tt.teardown(() => psql('postgres', `drop database if exists "${name.replace(/"/g, '""')}" with (force)`))
}

function dropMyLater (tt: { teardown: (fn: () => Promise<unknown>) => void }, name: string): void {
  tt.teardown(() => mysql(`drop database if exists \`${name.replace(/`/g, '``')}\``))
}

async function spoolLeftovers (): Promise<string[]> {
  const dir = path.join(agent.spoolDir, agent.serverId)
  if (!existsSync(dir)) return []
  return (await readdir(dir)).filter((n) => n.includes('.download'))
}

t.test('a PostgreSQL backup in S3 restored into a new database: checked, then restored byte for byte', async (t) => {
  const source = await pgDatabase(t, randomName('cp_src'), 20000)
  const planId = await createPlan(coordinator, { serverId: agent.serverId, type: 'database', destinationId, source: { ...PG_CONN, databases: [source] } })
  const b = await completedBackup(coordinator, planId)
  const target = randomName('cp_restored')
  dropPgLater(t, target)

  const created = await coordinator.api.post(`/api/v1/backups/${b.id}/restore`, { targetDatabase: target })
  t.equal(created.status, 201, JSON.stringify(created.body))
  t.match(created.body, { backupId: b.id, targetServerId: agent.serverId, targetDatabase: target, sourceDatabase: null, targetPath: null, replaceExisting: false, parts: ['databases'], error: null })
  t.equal(created.body.status, 'pending')
  t.same(created.body.connection, { ...PG_CONN, hasPassword: false }, 'the plan\'s connection, without a password')
  const watched = await watchRestore(coordinator, created.body.id)
  const r = watched.final
  t.equal(r.status, 'completed', JSON.stringify(r.error))
  t.same(['pending', ...watched.statuses].filter((s, i, a) => a.indexOf(s) === i), ['pending', 'in_progress', 'completed'], 'statuses only move forward')
  t.ok(r.startedAt !== null && r.finishedAt !== null && r.finishedAt >= r.startedAt)
  t.equal(r.progress, null, 'no progress once finished')
  t.match(r.details.restored, { archive: 'download', databases: [{ source, target, replaced: false }], files: null })
  t.equal(r.details.restored.bytes, b.sizeBytes, 'the whole archive was read')

  t.equal(await psql(target, PG_CHECKSUM), await psql(source, PG_CHECKSUM), 'rows restored byte for byte')
  t.equal(await psql(target, 'select double_it(21)'), '42', 'functions restored')
  t.equal(await psql(target, 'select count(*) from first_items'), '10', 'views restored')
  t.same(await spoolLeftovers(), [], 'the downloaded archive was removed')

  const listed = await coordinator.api.get(`/api/v1/restores?backupId=${b.id}`)
  t.equal(listed.status, 200)
  t.same(listed.body.items.map((x: any) => x.id), [r.id])
  const again = await coordinator.api.post(`/api/v1/restores/${r.id}/cancel`)
  t.equal(again.status, 409, 'a finished restore cannot be cancelled')
  t.equal(again.body.error.code, 'NOT_CANCELLABLE')
})

t.test('in place only with replaceExisting: DATABASE_EXISTS leaves the database alone; replace drops and recreates it', async (t) => {
  const source = await pgDatabase(t, randomName('cp_inplace'), 500)
  const planId = await createPlan(coordinator, { serverId: agent.serverId, type: 'database', destinationId, source: { ...PG_CONN, databases: [source] } })
  const b = await completedBackup(coordinator, planId)
  await psql(source, 'insert into items (name) values (\'written after the backup\')')

  const refused = await restore(coordinator, b.id, {})
  t.equal(refused.status, 'failed')
  t.equal(refused.error.code, 'DATABASE_EXISTS')
  t.match(refused.error.message, source)
  t.match(refused.error.message, /Nothing was written to the target/)
  t.match(refused.error.hint, /replaceExisting: true|new name/)
  t.equal(refused.details.targetMayBePartial, false)
  t.equal(await psql(source, 'select count(*) from items'), '501', 'the existing database was not touched')

  const replaced = await restore(coordinator, b.id, { replaceExisting: true })
  t.equal(replaced.status, 'completed', JSON.stringify(replaced.error))
  t.match(replaced.details.restored.databases, [{ source, target: source, replaced: true }])
  t.equal(await psql(source, 'select count(*) from items'), '500', 'the database is the backup again')
})

t.test('a MariaDB backup restored from the agent\'s own local copy into a new name', async (t) => {
  const source = await tempMysqlDatabase(t, 'cp_src')
  await mysql(`create table items (id int primary key auto_increment, name varchar(200) character set utf8mb4);
    insert into items (name) select concat('item ', seq, ' ünïcødé ✓') from seq_1_to_20000;
    create procedure twice(in x int) select x * 2;`, source.name)
  const planId = await createPlan(coordinator, { serverId: agent.serverId, type: 'database', destinationId, keepLocal: true, source: { ...MY_CONN, databases: [source.name] } })
  const b = await completedBackup(coordinator, planId)
  const target = randomName('cp_restored')
  dropMyLater(t, target)
  const r = await restore(coordinator, b.id, { targetDatabase: target })
  t.equal(r.status, 'completed', JSON.stringify(r.error))
  t.equal(r.details.restored.archive, 'spool', 'read from the local copy on the same server, not downloaded')
  t.equal(await mysql(MY_CHECKSUM, target), await mysql(MY_CHECKSUM, source.name))
  t.equal(await mysql('call twice(21)', target), '42', 'routines restored')
})

t.test('a multi-database PostgreSQL backup: one database under a new name, then all under their own names', async (t) => {
  const suffix = randomName('x')
  const a = await pgDatabase(t, `cp_multi_a_${suffix}`, 300)
  const odd = await pgDatabase(t, `cp multi "b" it's ${suffix}`, 700)
  const planId = await createPlan(coordinator, { serverId: agent.serverId, type: 'database', destinationId, source: { ...PG_CONN, databases: [a, odd] } })
  const b = await completedBackup(coordinator, planId)

  const ambiguous = await coordinator.api.post(`/api/v1/backups/${b.id}/restore`, { targetDatabase: 'x' })
  t.equal(ambiguous.status, 400)
  t.equal(ambiguous.body.error.code, 'VALIDATION_FAILED')
  t.match(ambiguous.body.error.message, /sourceDatabase/)
  const unknown = await coordinator.api.post(`/api/v1/backups/${b.id}/restore`, { sourceDatabase: 'nope', targetDatabase: 'x' })
  t.equal(unknown.status, 400)

  const target = randomName('cp_one')
  dropPgLater(t, target)
  const one = await restore(coordinator, b.id, { sourceDatabase: odd, targetDatabase: target })
  t.equal(one.status, 'completed', JSON.stringify(one.error))
  t.same(one.details.restored.databases, [{ source: odd, target, replaced: false }])
  t.equal(await psql(target, PG_CHECKSUM), await psql(odd, PG_CHECKSUM), 'the second database of the script, under its new name')

  await psql(a, 'delete from items')
  await psql(odd, 'delete from items')
  const all = await restore(coordinator, b.id, { replaceExisting: true })
  t.equal(all.status, 'completed', JSON.stringify(all.error))
  t.same(all.details.restored.databases.map((d: any) => d.target), [a, odd])
  t.equal(await psql(a, 'select count(*) from items'), '300')
  t.equal(await psql(odd, 'select count(*) from items'), '700')
})

t.test('a multi-database MariaDB backup: one of them restored under a new name', async (t) => {
  const first = await tempMysqlDatabase(t, 'cp_m1')
  const second = await tempMysqlDatabase(t, 'cp_m2')
  await mysql('create table items (id int primary key, name text); insert into items select seq, concat(\'first \', seq) from seq_1_to_100;', first.name)
  await mysql('create table items (id int primary key, name text); insert into items select seq, concat(\'second \', seq) from seq_1_to_250;', second.name)
  const planId = await createPlan(coordinator, { serverId: agent.serverId, type: 'database', destinationId, source: { ...MY_CONN, databases: [first.name, second.name] } })
  const b = await completedBackup(coordinator, planId)
  const target = randomName('cp_my_one')
  dropMyLater(t, target)
  const r = await restore(coordinator, b.id, { sourceDatabase: second.name, targetDatabase: target })
  t.equal(r.status, 'completed', JSON.stringify(r.error))
  t.equal(await mysql(MY_CHECKSUM, target), await mysql(MY_CHECKSUM, second.name))
  t.equal(await mysql('select count(*) from items', first.name), '100', 'the other database was not touched')
})

t.test('hostile target names are names: never SQL, options or connection strings', async (t) => {
  const source = await pgDatabase(t, randomName('cp_src'), 50)
  const planId = await createPlan(coordinator, { serverId: agent.serverId, type: 'database', destinationId, source: { ...PG_CONN, databases: [source] } })
  const b = await completedBackup(coordinator, planId)
  const suffix = randomName('')
  for (const target of [`host=127.0.0.9 dbname=postgres ${suffix}`, `x"; DROP DATABASE "${source}"; --${suffix}`, `--file=/tmp/evil${suffix}`]) {
    dropPgLater(t, target)
    const r = await restore(coordinator, b.id, { targetDatabase: target })
    t.equal(r.status, 'completed', `${JSON.stringify(target)}: ${JSON.stringify(r.error)}`)
    const asConninfo = `dbname='${target.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`
    t.equal(await psql(asConninfo, 'select count(*) from items'), '50', `restored into the database literally named ${JSON.stringify(target)}`)
  }
  t.equal(await psql(source, 'select count(*) from items'), '50', 'the source database is still there')

  const my = await tempMysqlDatabase(t, 'cp_mysrc')
  await mysql('create table items (id int primary key); insert into items select seq from seq_1_to_30;', my.name)
  const myPlan = await createPlan(coordinator, { serverId: agent.serverId, type: 'database', destinationId, source: { ...MY_CONN, databases: [my.name] } })
  const mb = await completedBackup(coordinator, myPlan)
  for (const target of [`--database=mysql ${suffix.slice(0, 8)}`, `a\`; DROP DATABASE \`${my.name}\`; -- ${suffix.slice(0, 6)}`]) {
    dropMyLater(t, target)
    const r = await restore(coordinator, mb.id, { targetDatabase: target })
    t.equal(r.status, 'completed', `${JSON.stringify(target)}: ${JSON.stringify(r.error)}`)
    t.equal(await mysql(`select count(*) from \`${target.replace(/`/g, '``')}\`.items`), '30', `restored into ${JSON.stringify(target)}`)
  }
  t.equal(await mysql('select count(*) from items', my.name), '30', 'the source database is still there')
})

t.test('restore onto another server: its agent downloads the archive from the destination itself', async (t) => {
  const other = await startAgent(t, coordinator)
  await waitOnline(coordinator, other.serverId)
  const source = await tempPostgresDatabase(t, 'cp_src')
  await psql(source.name, 'create table items (id serial primary key, name text not null); insert into items (name) select md5(g::text) from generate_series(1, 1000) g;')
  const planId = await createPlan(coordinator, { serverId: agent.serverId, type: 'database', destinationId, source: { ...PG_CONN, databases: [source.name] } })
  const b = await completedBackup(coordinator, planId)
  const target = randomName('cp_other')
  dropPgLater(t, target)
  const r = await restore(coordinator, b.id, { targetServerId: other.serverId, targetDatabase: target })
  t.equal(r.status, 'completed', JSON.stringify(r.error))
  t.equal(r.targetServerId, other.serverId)
  t.equal(r.details.restored.archive, 'download')
  t.equal(await psql(target, PG_CHECKSUM), await psql(source.name, PG_CHECKSUM))
  t.match(await other.log(), new RegExp(`"restoreOf":"${b.id}"`), 'the other server\'s agent ran it')
})

/** pids of running client processes (argv[0] is psql/mysql, not the server's backend) whose command line mentions `needle`. */
async function clientPidsMentioning (needle: string): Promise<number[]> {
  const pids: number[] = []
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue
    const argv = (await readFile(`/proc/${name}/cmdline`, 'utf8').catch(() => '')).split('\0')
    if (/(?:^|\/)(?:psql|mysql|mariadb|stdbuf)$/.test(argv[0] ?? '') && argv.some((a) => a.includes(needle))) pids.push(Number(name))
  }
  return pids
}

t.test('cancel a running restore: cancelled, psql\'s process group gone, temp file removed, target named as possibly partial', async (t) => {
  const source = await tempPostgresDatabase(t, 'cp_big')
  await psql(source.name, `create table blobs (id serial primary key, body text);
    insert into blobs (body) select string_agg(md5(g::text || ':' || i::text), '') from generate_series(1, 300000) g, generate_series(1, 1) i group by g % 60000;
    create index on blobs (body);
    -- Makes the restore (not the backup) slow, so the cancel always lands while psql is loading: the index build
    -- sleeps per row only in a database named like the restore target.
    create function cp_slow_in_restore (t text) returns text language plpgsql immutable as $fn$
      begin if current_database() like 'cp\\_cancelled%' then perform pg_sleep(0.002); end if; return t; end $fn$;
    create index on blobs (cp_slow_in_restore(body));`)
  const planId = await createPlan(coordinator, { serverId: agent.serverId, type: 'database', destinationId, source: { ...PG_CONN, databases: [source.name] } })
  const b = await completedBackup(coordinator, planId)
  const target = randomName('cp_cancelled')
  dropPgLater(t, target)
  const created = await coordinator.api.post(`/api/v1/backups/${b.id}/restore`, { targetDatabase: target })
  t.equal(created.status, 201)
  const running = await waitFor('restore writing the target', async () => {
    const r = await coordinator.api.get(`/api/v1/restores/${created.body.id}`)
    if (r.body.status !== 'in_progress' && r.body.status !== 'pending') throw new Error(`restore ended: ${JSON.stringify(r.body)}`)
    return r.body.progress?.phase === 'restoring' && r.body.progress.bytes > 0 ? r.body : undefined
  }, 60_000, 25)
  t.ok(running.progress.bytesPerSecond >= 0, 'progress shows bytes and rate')
  const psqlPids = await clientPidsMentioning(target)
  t.ok(psqlPids.length > 0, 'psql is loading the target')

  const cancel = await coordinator.api.post(`/api/v1/restores/${created.body.id}/cancel`)
  t.equal(cancel.status, 202)
  t.equal(cancel.body.cancelRequested, true)
  const { final } = await watchRestore(coordinator, created.body.id, 30_000)
  t.equal(final.status, 'cancelled')
  t.equal(final.error.code, 'CANCELLED')
  t.match(final.error.message, new RegExp(`${target}.*may be partially written`))
  t.match(final.error.hint, `DROP DATABASE "${target}"`)
  t.equal(final.details.targetMayBePartial, true)
  for (const pid of psqlPids) t.notOk(existsSync(`/proc/${pid}`), `psql ${pid} is gone`)
  t.same(await clientPidsMentioning(target), [], 'no client of the restore still runs')
  t.same(await spoolLeftovers(), [], 'no downloaded archive left in the spool')
  t.equal(await psql(target, 'select count(*) from pg_tables where schemaname = \'public\''), '0', 'psql ran in one transaction: the cancelled restore left the new database empty')
})
