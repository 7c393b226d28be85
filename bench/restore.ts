/**
 * Restore speed against what a user types by hand: `createdb x && gunzip -c dump.sql.gz | psql x`, versus the
 * agent's restore of the same archive (checksum pass included) from a `local` destination on the same machine.
 *
 *   npx node bench/restore.ts [rows=1000000] [runs=5]
 *
 * Needs PostgreSQL on 127.0.0.1:5432 (trust) and pg_dump/psql/gzip. Creates and drops its own databases.
 */
import { createHash, randomUUID } from 'node:crypto'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { execFileSync, spawnSync } from 'node:child_process'
import { tmpdir } from 'node:os'
import path from 'node:path'
import pino from 'pino'
import { openDestination } from '@cloudpilot/storage'
import type { RestoreJob } from '@cloudpilot/protocol'
import { createRunRestore } from '../agent/src/restore/run-restore.ts'
import { nothingWritten } from '../agent/src/restore/restore-context.ts'

const rows = Number(process.argv[2] ?? 1_000_000)
const runs = Number(process.argv[3] ?? 5)
const psql = (db: string, sql: string): string => execFileSync('psql', ['-h', '127.0.0.1', '-U', 'postgres', '-d', db, '-qAtc', sql]).toString().trim()
const dir = await mkdtemp(path.join(tmpdir(), 'cp-bench-restore-'))
const source = `cp_bench_src_${process.pid}`
try {
  psql('postgres', `create database ${source}`)
  psql(source, `create table items (id serial primary key, name text, body text);
    insert into items (name, body) select 'item ' || g, md5(g::text) || md5((g * 7)::text) from generate_series(1, ${rows}) g;`)
  const file = path.join(dir, 'dump.sql.gz')
  spawnSync('sh', ['-c', `pg_dump -h 127.0.0.1 -U postgres --no-owner --no-privileges ${source} | gzip > "${file}"`])
  const archive = await readFile(file)
  const sha256 = createHash('sha256').update(archive).digest('hex')
  console.log(`${rows} rows, archive ${archive.length} bytes`)
  const ratios: number[] = []
  for (let i = 0; i < runs; i++) {
    const byHand = `cp_bench_hand_${process.pid}_${i}`
    const ours = `cp_bench_ours_${process.pid}_${i}`
    let started = performance.now()
    spawnSync('sh', ['-c', `createdb -h 127.0.0.1 -U postgres -T template0 ${byHand} && gunzip -c "${file}" | psql -q -X -h 127.0.0.1 -U postgres -d ${byHand} > /dev/null`])
    const hand = (performance.now() - started) / 1000
    const job: RestoreJob = {
      kind: 'restore', jobId: randomUUID(), backupId: randomUUID(), serverId: randomUUID(),
      backup: { type: 'database', compression: 'gzip', encrypted: false, sha256, sizeBytes: archive.length, engine: 'postgresql', databases: [source] },
      archive: { localPath: null, objectKey: 'dump.sql.gz', destination: { id: randomUUID(), type: 'local', config: { path: dir }, credentials: {} } },
      database: { connection: { engine: 'postgresql', host: '127.0.0.1', port: 5432, username: 'postgres' }, sourceDatabase: null, targetDatabase: ours },
      targetPath: null, replaceExisting: false, timeoutSeconds: 3600, createdAt: new Date().toISOString(),
    }
    started = performance.now()
    const r = await createRunRestore()(job, {
      signal: new AbortController().signal, log: pino({ level: 'silent' }), spoolDir: path.join(dir, 'spool'),
      onProgress () {}, openDestination: async (d) => await openDestination(d), written: nothingWritten(),
    })
    const agent = (performance.now() - started) / 1000
    ratios.push(agent / hand)
    console.log(`run ${i}: createdb + gunzip | psql ${hand.toFixed(2)} s; agent restore ${agent.toFixed(2)} s (checksum pass ${r.verifySeconds.toFixed(2)} s, restore ${r.restoreSeconds.toFixed(2)} s) = ${(agent / hand).toFixed(2)}x`)
    psql('postgres', `drop database ${byHand}`)
    psql('postgres', `drop database ${ours}`)
  }
  ratios.sort((a, b) => a - b)
  console.log(`median ${(ratios[Math.floor(ratios.length / 2)] ?? 0).toFixed(2)}x (target <= 1.1x)`)
} finally {
  psql('postgres', `drop database if exists ${source}`)
  await rm(dir, { recursive: true, force: true })
}
