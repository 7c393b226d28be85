import t from 'tap'
import { startCoordinator, startAgent, waitOnline, freePort } from '../coordinator/test/helpers/processes.ts'
import { psql, mysql, tempMysqlDatabase, randomName } from '../coordinator/test/helpers/databases.ts'
import { startPasswordPostgres } from '../coordinator/test/helpers/password-postgres.ts'

const coordinator = await startCoordinator(t)
const agent = await startAgent(t, coordinator)
await waitOnline(coordinator, agent.serverId)

async function discover (serverId: string, body: Record<string, unknown>) {
  return await coordinator.api.post(`/api/v1/servers/${serverId}/discover-databases`, body)
}

t.test('PostgreSQL: the databases the connection sees, system databases flagged, any name intact', async (t) => {
  const odd = `${randomName('cp disc')} "quoted"\ttab`
  await psql('postgres', `create database "${odd.replace(/"/g, '""')}"`)
  t.teardown(() => psql('postgres', `drop database if exists "${odd.replace(/"/g, '""')}" with (force)`))
  const r = await discover(agent.serverId, { engine: 'postgresql', connection: { host: '127.0.0.1', port: 5432, username: 'postgres' } })
  t.equal(r.status, 200, JSON.stringify(r.body))
  const byName = new Map(r.body.databases.map((d: any) => [d.name, d.system]))
  t.equal(byName.get(odd), false, 'a user database with quotes and a tab in its name')
  t.equal(byName.get('test'), false)
  t.equal(byName.get('postgres'), true)
  t.equal(byName.get('template1'), true)
  t.equal(byName.get('template0'), true)
})

t.test('MySQL/MariaDB: user databases and the server\'s own (information_schema, mysql, performance_schema, sys)', async (t) => {
  const db = await tempMysqlDatabase(t, 'cp_disc')
  const r = await discover(agent.serverId, { engine: 'mysql', connection: { host: '127.0.0.1', port: 3306, username: 'root' } })
  t.equal(r.status, 200, JSON.stringify(r.body))
  const byName = new Map(r.body.databases.map((d: any) => [d.name, d.system]))
  t.equal(byName.get(db.name), false)
  for (const system of ['information_schema', 'mysql', 'performance_schema']) t.equal(byName.get(system), true, system)
})

t.test('ACCESS_DENIED with the grant to add; the password is neither returned nor logged', async (t) => {
  const user = randomName('cp_disc')
  const password = 'right horse battery'
  await mysql(`create user '${user}'@'localhost' identified by '${password}'; create user '${user}'@'127.0.0.1' identified by '${password}';`)
  t.teardown(() => mysql(`drop user if exists '${user}'@'localhost', '${user}'@'127.0.0.1'`))
  const wrong = 'wrong horse staple'
  const my = await discover(agent.serverId, { engine: 'mysql', connection: { host: '127.0.0.1', port: 3306, username: user, password: wrong } })
  t.equal(my.status, 400)
  t.equal(my.body.error.code, 'ACCESS_DENIED')
  t.match(my.body.error.hint, 'SHOW DATABASES')

  const pg = await startPasswordPostgres(t, 'the real one')
  const denied = await discover(agent.serverId, { engine: 'postgresql', connection: { host: '127.0.0.1', port: pg.port, username: 'postgres', password: wrong } })
  t.equal(denied.status, 400)
  t.equal(denied.body.error.code, 'ACCESS_DENIED')
  t.match(denied.body.error.hint, 'GRANT CONNECT')
  const allowed = await discover(agent.serverId, { engine: 'postgresql', connection: { host: '127.0.0.1', port: pg.port, username: 'postgres', password: 'the real one' } })
  t.equal(allowed.status, 404, 'the right password gets in: a fresh cluster has only system databases')
  t.equal(allowed.body.error.code, 'NO_DATABASES')

  for (const log of [await agent.log(), await coordinator.log()]) t.notMatch(log, wrong)
  t.notMatch(JSON.stringify([my.body, denied.body]), wrong)
})

t.test('NO_DATABASES: a user that sees only the server\'s own databases', async (t) => {
  const user = randomName('cp_nodb')
  await mysql(`create user '${user}'@'localhost'; create user '${user}'@'127.0.0.1';`)
  t.teardown(() => mysql(`drop user if exists '${user}'@'localhost', '${user}'@'127.0.0.1'`))
  const r = await discover(agent.serverId, { engine: 'mysql', connection: { host: '127.0.0.1', port: 3306, username: user } })
  t.equal(r.status, 404)
  t.equal(r.body.error.code, 'NO_DATABASES')
  t.match(r.body.error.hint, 'GRANT SHOW DATABASES')
})

t.test('SOURCE_UNREACHABLE: nothing listens at the host and port', async (t) => {
  const r = await discover(agent.serverId, { engine: 'postgresql', connection: { host: '127.0.0.1', port: await freePort(), username: 'postgres' } })
  t.equal(r.status, 400)
  t.equal(r.body.error.code, 'SOURCE_UNREACHABLE')
})

t.test('CLIENT_MISSING names the Debian package; AGENT_UNREACHABLE once the agent is gone', async (t) => {
  const bare = await startAgent(t, coordinator, { env: { PATH: '/nonexistent' } })
  await waitOnline(coordinator, bare.serverId)
  const pg = await discover(bare.serverId, { engine: 'postgresql', connection: { host: '127.0.0.1', port: 5432 } })
  t.equal(pg.status, 400)
  t.equal(pg.body.error.code, 'CLIENT_MISSING')
  t.match(pg.body.error.hint, 'apt-get install postgresql-client')
  const my = await discover(bare.serverId, { engine: 'mysql', connection: { host: '127.0.0.1', port: 3306 } })
  t.equal(my.body.error.code, 'CLIENT_MISSING')
  t.match(my.body.error.hint, 'apt-get install mariadb-client')

  await bare.stop()
  const gone = await discover(bare.serverId, { engine: 'mysql' })
  t.equal(gone.status, 503)
  t.equal(gone.body.error.code, 'AGENT_UNREACHABLE')
  const unknown = await discover('00000000-0000-4000-8000-000000000000', { engine: 'mysql' })
  t.equal(unknown.status, 404)
  const invalid = await discover(agent.serverId, { engine: 'oracle' })
  t.equal(invalid.status, 400)
  t.equal(invalid.body.error.code, 'VALIDATION_FAILED')
})
