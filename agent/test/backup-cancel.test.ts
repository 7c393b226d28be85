import t from 'tap'
import type tap from 'tap'
import { existsSync } from 'node:fs'
import { readdir } from 'node:fs/promises'
import { CloudPilotError } from '@cloudpilot/protocol'
import { createRunBackup } from '../src/backup/run-backup.ts'
import {
  MY, PG, backupContext, createMyDatabase, createPgDatabase, databaseJob, filesUnder, groupAlive, localDestination,
  mysql, psql, serviceSkip, tempDir,
} from './helpers/backup-fixtures.ts'

const pgSkip = await serviceSkip('PostgreSQL', PG.port)
const mySkip = await serviceSkip('MariaDB', MY.port)

type Source = Parameters<typeof databaseJob>[0]

/** Starts a backup, aborts it once compressed bytes flow, and checks that nothing of it is left. */
async function cancelMidDump (t: Pick<typeof tap, 'ok' | 'equal' | 'same' | 'notOk' | 'teardown'>, source: Source): Promise<void> {
  const spawned: Array<{ pid: number, file: string }> = []
  const runBackup = createRunBackup({ progressIntervalMs: 20, onSpawn: (info) => { spawned.push(info) } })
  const dest = await tempDir(t)
  const ctx = await backupContext(t)
  const reason = new CloudPilotError('CANCELLED', 'cancelled by the test')
  const origOnProgress = ctx.onProgress.bind(ctx)
  let abortedAt = -1
  let dumpAliveAtAbort = false
  ctx.onProgress = (p) => {
    origOnProgress(p)
    if (abortedAt < 0 && p.bytes > 512 * 1024) {
      abortedAt = p.bytes
      dumpAliveAtAbort = spawned.some((s) => /(pg_dump|mariadb-dump|mysqldump)$/.test(s.file) && existsSync(`/proc/${s.pid}`))
      ctx.controller.abort(reason)
    }
  }
  const job = databaseJob(source, { destination: localDestination(dest), keepLocal: true })
  const err = await runBackup(job, ctx).catch((e: unknown) => e)

  t.ok(abortedAt > 0, `aborted mid-dump after ${abortedAt} compressed bytes`)
  t.equal(err, reason, 'rejects with the signal\'s reason (cancel can be told from timeout)')
  t.ok(dumpAliveAtAbort, 'the dump process was still running when the signal was aborted')
  for (const { pid, file } of spawned) t.notOk(await groupAlive(pid), `process group of ${file} (${pid}) is gone`)
  t.same(await filesUnder(dest), [], 'no object (and no part file) at the destination')
  t.same(await readdir(ctx.spoolDir), [], 'no partial spool file')
  t.same(ctx.offsite, ['uploading', 'failed'])
}

t.test('cancelling a PostgreSQL backup mid-dump kills pg_dump and leaves nothing', { skip: pgSkip }, async (t) => {
  const db = await createPgDatabase(t)
  await psql(db, "CREATE TABLE big AS SELECT g, md5(g::text) || repeat(md5((g * 7)::text), 8) AS t FROM generate_series(1, 300000) g;")
  await cancelMidDump(t, { engine: 'postgresql', ...PG, databases: [db] })
})

t.test('cancelling a MariaDB backup mid-dump kills the dump tool and leaves nothing', { skip: mySkip }, async (t) => {
  const db = await createMyDatabase(t)
  await mysql('CREATE TABLE big (g INT PRIMARY KEY, t TEXT) ENGINE=InnoDB; INSERT INTO big SELECT seq, REPEAT(MD5(seq), 9) FROM seq_1_to_300000;', db)
  await cancelMidDump(t, { engine: 'mysql', host: MY.host, port: MY.port, username: MY.username, databases: [db] })
})

t.test('an already aborted signal rejects at once with its reason and starts nothing', async (t) => {
  const spawned: number[] = []
  const runBackup = createRunBackup({ onSpawn: ({ pid }) => { spawned.push(pid) } })
  const ctx = await backupContext(t)
  const reason = new CloudPilotError('TIMEOUT')
  ctx.controller.abort(reason)
  const err = await runBackup(databaseJob({ engine: 'postgresql', ...PG, databases: ['x'] }, { keepLocal: true }), ctx).catch((e: unknown) => e)
  t.equal(err, reason)
  t.same(spawned, [])
})
