/**
 * Scenarios 1-4: backups of PostgreSQL, MariaDB and a file tree by a real agent streaming to the S3 emulator
 * (no local copy), each against the shell pipeline a user would write, and the restore of the PostgreSQL backup
 * against `createdb && gunzip -c | psql`.
 */
import path from 'node:path'
import { createWriteStream } from 'node:fs'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import type { Flags } from '../lib/flags.ts'
import { startAgent, startCoordinator, startS3Emulator, type Agent, type Coordinator, type S3Emulator } from '../lib/services.ts'
import { generateFileTree, generateMariadb, generatePostgres, benchName, psql, MY, PG, type DatabaseData } from '../lib/datasets.ts'
import { comparisons, interleave, terminal, verifyGzip, type Interleaved, type OursSpec } from '../lib/backup-runner.ts'
import { stats, MB } from '../lib/stats.ts'
import type { ScenarioResult } from '../lib/result.ts'
import { onCleanup } from '../lib/cleanup.ts'

export interface BackupEnv {
  s3: S3Emulator
  coordinator: Coordinator
  agent: Agent
  destinationId: string
  tmp: string
}

function step (line: string): void {
  process.stderr.write(`${line}\n`)
}

export async function startBackupEnv (tmp: string, agentBin: string | null): Promise<BackupEnv> {
  const s3 = await startS3Emulator()
  const coordinator = await startCoordinator({ dataDir: path.join(tmp, 'coordinator') })
  const agent = await startAgent(coordinator, path.join(tmp, 'agent'), agentBin)
  const r = await coordinator.api.post('/api/v1/destinations', {
    name: 'bench s3', type: 's3',
    config: { bucket: s3.bucket, region: s3.region, endpoint: s3.endpoint, forcePathStyle: true },
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
  })
  if (r.status !== 201) throw new Error(`destination: ${r.status} ${JSON.stringify(r.body)}`)
  return { s3, coordinator, agent, destinationId: r.body.id, tmp }
}

async function createPlan (env: BackupEnv, body: Record<string, unknown>): Promise<string> {
  const r = await env.coordinator.api.post('/api/v1/plans', { name: `bench ${Math.random().toString(36).slice(2, 6)}`, serverId: env.agent.serverId, destinationId: env.destinationId, keepLocal: false, ...body })
  if (r.status !== 201) throw new Error(`plan: ${r.status} ${JSON.stringify(r.body)}`)
  if (r.body.keepLocal !== false) throw new Error('plan keeps a local copy; the benchmark needs keepLocal: false')
  return r.body.id as string
}

function runPlan (env: BackupEnv, planId: string, label: string): OursSpec {
  return {
    label,
    start: async () => {
      const r = await env.coordinator.api.post(`/api/v1/plans/${planId}/run`)
      if (r.status !== 201) throw new Error(`run: ${r.status} ${JSON.stringify(r.body)}`)
      return r.body.id as string
    },
    poll: terminal(env.coordinator, (id) => `/api/v1/backups/${id}`),
    alsoWatch: watched(env),
  }
}

function watched (env: BackupEnv): Array<{ label: string, pid: number }> {
  return [{ label: 'coordinator', pid: env.coordinator.proc.pid as number }, { label: 'S3 emulator', pid: env.s3.proc.pid as number }]
}

function otherCpuNote (r: Interleaved): { text: string, medians: Record<string, number> } {
  const medians: Record<string, number> = {}
  for (const label of Object.keys(r.ours[0]?.otherCpu ?? {})) medians[label] = stats(r.ours.map((o) => o.otherCpu[label] ?? NaN)).median
  return {
    text: `During ours, on the same 2 cores: ${Object.entries(medians).map(([k, v]) => `${k} ${v.toFixed(1)} CPU s`).join(', ')} (median per run; not in ours' CPU figure; the baselines write a local file instead).`,
    medians,
  }
}

/** Judges a backup scenario: ratio to the first baseline, agent peak RSS, temporary disk, valid .gz. */
async function backupResult (env: BackupEnv, id: string, label: string, measured: string, r: Interleaved, target: { ratio: number, notes: string[], extra: Record<string, unknown> }): Promise<ScenarioResult> {
  const seconds = stats(r.ours.map((o) => o.seconds))
  const comps = comparisons(r)
  const peakRssMb = Math.max(...r.ours.map((o) => o.sample.peakRssBytes)) / MB
  const childrenPeakMb = Math.max(...r.ours.map((o) => o.sample.childrenPeakRssBytes)) / MB
  const spoolMax = Math.max(...r.ours.map((o) => o.sample.watchDirMaxBytes))
  const written = Math.max(...r.ours.map((o) => o.sample.writtenBytes ?? 0))
  const last = r.ours.at(-1) as Interleaved['ours'][number]
  const check = await verifyGzip(env.coordinator, last.body)
  const ratio = comps[0]?.ratio ?? NaN
  const zeroTemp = spoolMax === 0 && written < MB
  const missed = [
    ...(ratio <= target.ratio ? [] : [`ratio ${ratio.toFixed(3)}x > ${target.ratio.toFixed(1)}`]),
    ...(peakRssMb <= 80 ? [] : [`agent peak RSS ${peakRssMb.toFixed(0)} MB > 80`]),
    ...(zeroTemp ? [] : [`temp disk: spool ${spoolMax} B, agent wrote ${written} B`]),
    ...(check.gzipOk ? [] : ['output fails gzip -t']),
    ...(check.sha256Ok ? [] : ['downloaded sha256 differs']),
  ]
  const met = missed.length === 0
  return {
    id, label, measured, seconds, comparisons: comps, peakRssMb, missed, summary: '',
    cpuSeconds: stats(r.ours.map((o) => o.sample.cpuSelf + o.sample.cpuChildren)).median,
    target: `<= ${target.ratio.toFixed(1)}x ${comps[0]?.baseline ?? ''}; agent peak RSS <= 80 MB; zero temp disk; standard .gz`,
    met,
    verdict: `${ratio.toFixed(2)}x ${comps[0]?.baseline ?? ''}, agent peak RSS ${peakRssMb.toFixed(0)} MB, spool max ${spoolMax} B, agent wrote ${(written / 1024).toFixed(0)} KiB, gzip -t ${check.gzipOk ? 'ok' : 'FAILED'}, sha256 ${check.sha256Ok ? 'ok' : 'MISMATCH'}`,
    notes: [
      'Wall time of ours: POST /plans/:id/run until GET /backups/:id says completed (polled every 50 ms): includes dispatch, the upload to the S3 emulator and the coordinator round trips.',
      'CPU of ours: agent process user+sys plus its reaped children (dump tool, pigz). Baseline CPU: the whole shell pipeline. Neither includes the database server.',
      `Agent children (dump tool, pigz) peak RSS, sampled every 100 ms, summed: ${childrenPeakMb.toFixed(0)} MB (not in the agent figure).`,
      otherCpuNote(r).text,
      ...target.notes,
    ],
    extra: {
      ...target.extra,
      otherCpuSecondsMedian: otherCpuNote(r).medians,
      oursCompressedBytes: last.body.sizeBytes,
      downloadedBytes: check.bytes,
      gzipTest: check.gzipOk,
      sha256Match: check.sha256Ok,
      spoolMaxBytes: spoolMax,
      agentWrittenBytesMax: written,
      agentChildrenPeakRssMb: childrenPeakMb,
      peakResetWorked: r.ours.every((o) => o.sample.peakResetWorked),
      oursSecondsPerRep: r.ours.map((o) => o.seconds),
      agentRunSecondsPerRep: r.ours.map((o) => (new Date(o.body.finishedAt).getTime() - new Date(o.body.startedAt).getTime()) / 1000),
    },
  }
}

const PG_CONNINFO = (db: string): string => `'host=${PG.host} port=${PG.port} user=${PG.username} dbname=${db}'`
/** The agent's pg_dump options (agent/src/sources/postgres-dump.ts). */
const PG_DUMP = (db: string): string => `pg_dump --format=plain --no-owner --no-privileges --no-password --dbname=${PG_CONNINFO(db)}`
/** The agent's dump options (agent/src/sources/mysql-dump.ts, MYSQL_DUMP_OPTIONS). */
const MY_DUMP = (db: string): string => `mariadb-dump --single-transaction --quick --routines --triggers --events --hex-blob --no-tablespaces --default-character-set=utf8mb4 --host=${MY.host} --port=${MY.port} --user=${MY.username} -- ${db}`

export interface PgBackupOutcome { result: ScenarioResult, data: DatabaseData, backup: { id: string, sha256: string, sizeBytes: number } }

export async function pgBackup (env: BackupEnv, flags: Flags): Promise<PgBackupOutcome> {
  step(`[pg] generating ~${flags.pgSizeMb} MB of PostgreSQL table data`)
  const data = await generatePostgres(flags.pgSizeMb)
  step(`[pg] ${data.rows} rows, database size ${(data.sizeBytes / MB).toFixed(0)} MB`)
  const planId = await createPlan(env, { type: 'database', source: { engine: 'postgresql', host: PG.host, port: PG.port, username: PG.username, databases: [data.name] } })
  const out = path.join(env.tmp, 'baseline.sql.gz')
  const r = await interleave({
    agent: env.agent, reps: flags.reps, warmup: flags.warmup, outFile: out,
    ours: runPlan(env, planId, 'agent'),
    baselines: [
      { label: 'pg_dump | gzip', command: `${PG_DUMP(data.name)} | gzip > $OUT` },
      { label: 'pg_dump | pigz', command: `${PG_DUMP(data.name)} | pigz > $OUT` },
    ],
  })
  const result = await backupResult(env, 'pg', 'PostgreSQL backup to S3', 'agent: pg_dump -> pigz -> S3 emulator, no local copy', r, {
    ratio: 1.0,
    notes: [],
    extra: { databaseBytes: data.sizeBytes, rows: data.rows },
  })
  const last = r.ours.at(-1) as Interleaved['ours'][number]
  return { result, data, backup: { id: last.id, sha256: last.body.sha256, sizeBytes: last.body.sizeBytes } }
}

export async function mysqlBackup (env: BackupEnv, flags: Flags): Promise<ScenarioResult> {
  step(`[mysql] generating ~${flags.mysqlSizeMb} MB of MariaDB table data`)
  const data = await generateMariadb(flags.mysqlSizeMb)
  step(`[mysql] ${data.rows} rows, data+index ${(data.sizeBytes / MB).toFixed(0)} MB`)
  const planId = await createPlan(env, { type: 'database', source: { engine: 'mysql', host: MY.host, port: MY.port, username: MY.username, databases: [data.name] } })
  const r = await interleave({
    agent: env.agent, reps: flags.reps, warmup: flags.warmup, outFile: path.join(env.tmp, 'baseline.sql.gz'),
    ours: runPlan(env, planId, 'agent'),
    baselines: [
      { label: 'mysqldump | gzip', command: `${MY_DUMP(data.name)} | gzip > $OUT` },
      { label: 'mysqldump | pigz', command: `${MY_DUMP(data.name)} | pigz > $OUT` },
    ],
  })
  return await backupResult(env, 'mysql', 'MariaDB backup to S3', 'agent: mariadb-dump -> pigz -> S3 emulator, no local copy', r, {
    ratio: 1.0,
    notes: ['The baseline runs mariadb-dump (what `mysqldump` is on this host) with the agent\'s options.'],
    extra: { databaseBytes: data.sizeBytes, rows: data.rows },
  })
}

export async function filesBackup (env: BackupEnv, flags: Flags): Promise<ScenarioResult> {
  step(`[files] generating ${flags.filesCount} small files + ${flags.largeFiles} x ${flags.largeFileMb} MB`)
  const started = performance.now()
  const tree = await generateFileTree(path.join(env.tmp, 'tree'), flags.filesCount, flags.largeFiles, flags.largeFileMb)
  step(`[files] ${tree.files} files, ${(tree.bytes / MB).toFixed(0)} MB, generated in ${((performance.now() - started) / 1000).toFixed(1)} s`)
  const planId = await createPlan(env, { type: 'files', source: { paths: [tree.dir] } })
  const r = await interleave({
    agent: env.agent, reps: flags.reps, warmup: flags.warmup, outFile: path.join(env.tmp, 'baseline.tar.gz'),
    ours: runPlan(env, planId, 'agent'),
    baselines: [
      { label: 'tar czf', command: `tar czf $OUT -C ${JSON.stringify(tree.dir)} .` },
      { label: 'tar | pigz', command: `tar cf - -C ${JSON.stringify(tree.dir)} . | pigz > $OUT` },
    ],
  })
  return await backupResult(env, 'files', 'Files backup to S3', 'agent: tar walk -> pigz -> S3 emulator, no local copy', r, {
    ratio: 1.0,
    notes: ['The page cache holds the tree after the warm-up: every run reads it from memory, ours and the baselines alike.'],
    extra: { files: tree.files, treeBytes: tree.bytes },
  })
}

export async function pgRestore (env: BackupEnv, flags: Flags, from: PgBackupOutcome): Promise<ScenarioResult> {
  step('[restore] downloading the PostgreSQL backup for the baseline')
  const file = path.join(env.tmp, 'restore-input.sql.gz')
  const res = await env.coordinator.api.raw(`/api/v1/backups/${from.backup.id}/download`)
  if (!res.ok || res.body === null) throw new Error(`download: ${res.status}`)
  await pipeline(Readable.fromWeb(res.body as import('node:stream/web').ReadableStream), createWriteStream(file))
  const byHand = benchName('restore_hand')
  const ours = benchName('restore_ours')
  const drop = async (db: string): Promise<void> => { await psql('postgres', `drop database if exists ${db} with (force)`) }
  onCleanup('restore databases', async () => { await drop(byHand); await drop(ours) })
  const r = await interleave({
    agent: env.agent, reps: flags.reps, warmup: flags.warmup, outFile: path.join(env.tmp, 'unused'),
    ours: {
      label: 'agent restore',
      start: async () => {
        const q = await env.coordinator.api.post(`/api/v1/backups/${from.backup.id}/restore`, { targetDatabase: ours })
        if (q.status !== 201) throw new Error(`restore: ${q.status} ${JSON.stringify(q.body)}`)
        return q.body.id as string
      },
      poll: terminal(env.coordinator, (id) => `/api/v1/restores/${id}`),
      alsoWatch: watched(env),
      reset: async () => { await drop(ours) },
    },
    baselines: [{
      label: 'createdb && gunzip -c | psql',
      command: `createdb -h ${PG.host} -p ${PG.port} -U ${PG.username} -T template0 ${byHand} && gunzip -c ${JSON.stringify(file)} | psql -q -X -h ${PG.host} -p ${PG.port} -U ${PG.username} -d ${byHand} > /dev/null`,
      reset: async () => { await drop(byHand) },
    }],
  })
  const seconds = stats(r.ours.map((o) => o.seconds))
  const comps = comparisons(r)
  const ratio = comps[0]?.ratio ?? NaN
  const peakRssMb = Math.max(...r.ours.map((o) => o.sample.peakRssBytes)) / MB
  const spoolMax = Math.max(...r.ours.map((o) => o.sample.watchDirMaxBytes))
  return {
    id: 'restore', label: 'PostgreSQL restore from S3', measured: 'agent: download + sha256 check -> gunzip -> psql into a new database',
    seconds, comparisons: comps, peakRssMb,
    cpuSeconds: stats(r.ours.map((o) => o.sample.cpuSelf + o.sample.cpuChildren)).median,
    target: '<= 1.1x createdb && gunzip -c | psql',
    met: ratio <= 1.1,
    missed: ratio <= 1.1 ? [] : [`ratio ${ratio.toFixed(3)}x > 1.1`],
    summary: '',
    verdict: `${ratio.toFixed(2)}x, agent peak RSS ${peakRssMb.toFixed(0)} MB`,
    notes: [
      'Wall time of ours: POST /backups/:id/restore until GET /restores/:id says completed (polled every 50 ms).',
      otherCpuNote(r).text,
      `Ours first downloads the archive from the S3 emulator into the spool (${(spoolMax / MB).toFixed(0)} MB at most) and checks its sha256, then restores; the baseline reads the same archive from a local file.`,
    ],
    extra: { archiveBytes: from.backup.sizeBytes, spoolMaxBytes: spoolMax, oursSecondsPerRep: r.ours.map((o) => o.seconds), restoreBodies: r.ours.map((o) => ({ progress: o.body.progress, startedAt: o.body.startedAt, finishedAt: o.body.finishedAt })) },
  }
}
