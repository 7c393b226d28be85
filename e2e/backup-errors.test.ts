import t from 'tap'
import path from 'node:path'
import { mkdir, symlink } from 'node:fs/promises'
import { startCoordinator, startAgent, waitOnline, tempDir, freePort, type CoordinatorProcess, type AgentProcess } from '../coordinator/test/helpers/processes.ts'
import { mysql, tempPostgresDatabase, tempMysqlDatabase, randomName } from '../coordinator/test/helpers/databases.ts'
import { startPasswordPostgres } from '../coordinator/test/helpers/password-postgres.ts'
import { s3, createS3Destination, createPlan, watchBackup } from './helpers.ts'

async function runOnce (coordinator: CoordinatorProcess, plan: Record<string, unknown>): Promise<any> {
  const planId = await createPlan(coordinator, plan)
  const run = await coordinator.api.post(`/api/v1/plans/${planId}/run`)
  if (run.status !== 201) throw new Error(`run: ${run.status} ${JSON.stringify(run.body)}`)
  return (await watchBackup(coordinator, run.body.id)).final
}

t.test('backup failures carry the documented code, a cause and a hint; nothing is reported completed', async (t) => {
  const bucket = await s3(t)
  const coordinator = await startCoordinator(t)
  const agent: AgentProcess = await startAgent(t, coordinator)
  await waitOnline(coordinator, agent.serverId)
  const pg = await tempPostgresDatabase(t, 'cp_err')
  const my = await tempMysqlDatabase(t, 'cp_err')
  const pgSource = (extra: Record<string, unknown>) => ({ engine: 'postgresql', host: '127.0.0.1', port: 5432, username: 'postgres', databases: [pg.name], ...extra })

  t.test('wrong PostgreSQL password -> ACCESS_DENIED with the grants to give', async (t) => {
    const secured = await startPasswordPostgres(t, 'right-password')
    const b = await runOnce(coordinator, { serverId: agent.serverId, type: 'database', source: { engine: 'postgresql', host: '127.0.0.1', port: secured.port, username: 'postgres', password: 'wrong-password', databases: ['postgres'] } })
    t.equal(b.status, 'failed')
    t.equal(b.error.code, 'ACCESS_DENIED')
    t.match(b.error.hint, /CONNECT|SELECT|pg_read_all_data/)
    t.notMatch(JSON.stringify(b), /wrong-password/, 'the password is in no message')
    const ok = await runOnce(coordinator, { serverId: agent.serverId, type: 'database', source: { engine: 'postgresql', host: '127.0.0.1', port: secured.port, username: 'postgres', password: 'right-password', databases: ['postgres'] } })
    t.equal(ok.status, 'completed', 'and the right password works against the same server')
  })

  t.test('wrong MariaDB password -> ACCESS_DENIED', async (t) => {
    const user = randomName('cpu')
    await mysql(`create user '${user}'@'127.0.0.1' identified by 'right-pass'; grant select, show view, trigger, lock tables on \`${my.name}\`.* to '${user}'@'127.0.0.1'`)
    t.teardown(() => mysql(`drop user if exists '${user}'@'127.0.0.1'`))
    const b = await runOnce(coordinator, { serverId: agent.serverId, type: 'database', source: { engine: 'mysql', host: '127.0.0.1', port: 3306, username: user, password: 'wrong-pass', databases: [my.name] } })
    t.equal(b.status, 'failed')
    t.equal(b.error.code, 'ACCESS_DENIED')
    t.match(b.error.hint, /SELECT/)
    t.notMatch(JSON.stringify(b), /wrong-pass/)
  })

  t.test('unreachable database server -> SOURCE_UNREACHABLE', async (t) => {
    const closed = await freePort()
    const b = await runOnce(coordinator, { serverId: agent.serverId, type: 'database', source: pgSource({ port: closed }) })
    t.equal(b.status, 'failed')
    t.equal(b.error.code, 'SOURCE_UNREACHABLE')
    const m = await runOnce(coordinator, { serverId: agent.serverId, type: 'database', source: { engine: 'mysql', host: '127.0.0.1', port: closed, username: 'root', databases: [my.name] } })
    t.equal(m.error.code, 'SOURCE_UNREACHABLE')
  })

  t.test('wrong S3 key or missing bucket -> UPLOAD_FAILED with the cause; nothing left in the bucket', async (t) => {
    const wrongKey = await createS3Destination(coordinator, bucket, { credentials: { secretAccessKey: 'not-the-secret' } })
    const b = await runOnce(coordinator, { serverId: agent.serverId, type: 'database', destinationId: wrongKey, source: pgSource({}) })
    t.equal(b.status, 'failed')
    t.equal(b.error.code, 'UPLOAD_FAILED')
    t.match(b.error.message, /AUTH_FAILED|credentials|signature|Access/i, 'the cause is named')
    t.equal(b.offsiteStatus, 'failed')
    t.notMatch(JSON.stringify(b), /not-the-secret/)
    const noBucket = await createS3Destination(coordinator, bucket, { config: { bucket: 'no-such-bucket' } })
    const c = await runOnce(coordinator, { serverId: agent.serverId, type: 'database', destinationId: noBucket, source: pgSource({}) })
    t.equal(c.error.code, 'UPLOAD_FAILED')
    t.match(c.error.message, /CONTAINER_NOT_FOUND|bucket/i)
  })

  t.test('missing database -> SOURCE_NOT_FOUND; missing path -> SOURCE_NOT_FOUND', async (t) => {
    const b = await runOnce(coordinator, { serverId: agent.serverId, type: 'database', source: pgSource({ databases: ['cp_does_not_exist'] }) })
    t.equal(b.error.code, 'SOURCE_NOT_FOUND')
    const f = await runOnce(coordinator, { serverId: agent.serverId, type: 'files', source: { paths: ['/nonexistent/cloudpilot/path'] } })
    t.equal(f.error.code, 'SOURCE_NOT_FOUND')
  })
})

t.test('a dump tool missing on the server -> CLIENT_MISSING naming the Debian package', async (t) => {
  const coordinator = await startCoordinator(t)
  // An agent whose PATH holds no database client tools at all.
  const bin = await tempDir(t, 'cp-emptybin')
  await mkdir(bin, { recursive: true })
  await symlink('/usr/bin/gzip', path.join(bin, 'gzip'))
  const agent = await startAgent(t, coordinator, { env: { PATH: bin } })
  const server = await waitOnline(coordinator, agent.serverId)
  t.notOk('pg_dump' in server.tools, 'the agent reports pg_dump absent')
  const pg = await tempPostgresDatabase(t, 'cp_nt')
  const b = await runOnce(coordinator, { serverId: agent.serverId, type: 'database', source: { engine: 'postgresql', host: '127.0.0.1', databases: [pg.name] } })
  t.equal(b.status, 'failed')
  t.equal(b.error.code, 'CLIENT_MISSING')
  t.match(b.error.hint, /postgresql-client/)
  const m = await runOnce(coordinator, { serverId: agent.serverId, type: 'database', source: { engine: 'mysql', host: '127.0.0.1', databases: ['mysql'] } })
  t.equal(m.error.code, 'CLIENT_MISSING')
  t.match(m.error.hint, /mariadb-client/)
})
