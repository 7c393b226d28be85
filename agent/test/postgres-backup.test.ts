import t from 'tap'
import path from 'node:path'
import { readFile } from 'node:fs/promises'
import { createRunBackup } from '../src/backup/run-backup.ts'
import {
  PG, backupContext, createPgDatabase, databaseJob, dropPgDatabase, localDestination, pgConninfoFor, psql, serviceSkip,
  shell, tempDir,
} from './helpers/backup-fixtures.ts'

const skip = await serviceSkip('PostgreSQL', PG.port)
const runBackup = createRunBackup()

/** Tables with a few thousand rows: unicode text, bytea (incl. NUL and high bytes), numeric, jsonb, NULLs. */
async function fill (database: string, rows = 3000): Promise<void> {
  await psql(database, `
    CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, data bytea, price numeric(12,2), meta jsonb, created timestamptz);
    INSERT INTO items (name, data, price, meta, created)
      SELECT 'item ' || g || ' – Grüße 🚀 日本語 ''quoted'' \\ back',
             CASE WHEN g % 7 = 0 THEN NULL ELSE decode(md5(g::text) || '00ff', 'hex') END,
             g * 1.25,
             jsonb_build_object('n', g, 'tags', jsonb_build_array('a', 'ü'))::jsonb,
             timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute'
      FROM generate_series(1, ${rows}) g;
    CREATE TABLE "Mixed Case ""table""" (k text PRIMARY KEY, v int);
    INSERT INTO "Mixed Case ""table""" SELECT 'k' || g, g FROM generate_series(1, 50) g;
    CREATE VIEW cheap AS SELECT id, name FROM items WHERE price < 100;
    CREATE FUNCTION twice(int) RETURNS int LANGUAGE sql AS 'SELECT $1 * 2';
  `)
}

async function fingerprint (database: string): Promise<string> {
  return await psql(database, `
    SELECT count(*) || ':' || md5(string_agg(i::text, '|' ORDER BY id)) FROM items i;
    SELECT count(*) || ':' || md5(string_agg(m::text, '|' ORDER BY k)) FROM "Mixed Case ""table""" m;
    SELECT count(*) FROM cheap;
    SELECT twice(21);
  `)
}

t.test('a PostgreSQL database round-trips through gunzip | psql', { skip }, async (t) => {
  const db = await createPgDatabase(t)
  await fill(db)
  const expected = await fingerprint(db)
  t.match(expected, /^3000:[0-9a-f]{32}\n50:[0-9a-f]{32}\n79\n42\n$/)

  const dest = await tempDir(t)
  const ctx = await backupContext(t)
  const job = databaseJob({ engine: 'postgresql', ...PG, databases: [db] }, { destination: localDestination(dest) })
  const result = await runBackup(job, ctx)

  t.equal(result.objectKey, job.objectKey)
  t.equal(result.localPath, null)
  t.equal(result.offsiteStatus, 'uploaded')
  t.same(ctx.offsite, ['uploading', 'uploaded'])
  t.equal(result.manifest.engine, 'postgresql')
  t.same(result.manifest.databases, [db])
  t.ok(result.manifest.rawBytes > result.sizeBytes, 'compressed')
  t.match(result.manifest.tools, { pg_dump: /^\d+\.\d+/ })

  const file = path.join(dest, job.objectKey)
  const restored = await createPgDatabase(t)
  await shell('gunzip -c "$1" | psql -X -q -v ON_ERROR_STOP=1 --dbname="$2" >/dev/null', [file, pgConninfoFor(restored)])
  t.equal(await fingerprint(restored), expected, 'restored data equals the source')

  const dump = await shell('gunzip -c "$1"', [file])
  t.notMatch(dump, /CREATE DATABASE/, 'a single-database dump does not create the database')
  t.notMatch(dump, /OWNER TO|GRANT /, '--no-owner --no-privileges')
})

t.test('several PostgreSQL databases become one script that psql -d postgres restores', { skip }, async (t) => {
  const a = await createPgDatabase(t)
  const b = await createPgDatabase(t, `cp_test "quoted" name ${Date.now()}`)
  await fill(a, 1000)
  await fill(b, 1200)
  const expectedA = await fingerprint(a)
  const expectedB = await fingerprint(b)

  const ctx = await backupContext(t)
  const job = databaseJob({ engine: 'postgresql', ...PG, databases: [a, b] }, { keepLocal: true, compression: 'zstd' })
  const result = await runBackup(job, ctx)
  t.ok(result.localPath?.endsWith('.sql.zst'))
  t.equal(result.objectKey, null)
  t.equal(result.offsiteStatus, null)
  t.same(ctx.offsite, [])
  const localPath = result.localPath as string

  const script = await shell('zstd -dc "$1"', [localPath])
  t.match(script, `-- cloudpilot:database ${JSON.stringify(a)}\n`)
  t.match(script, `-- cloudpilot:database ${JSON.stringify(b)}\n`)

  await dropPgDatabase(a)
  await dropPgDatabase(b)
  await shell('zstd -dc "$1" | psql -X -q -v ON_ERROR_STOP=1 --dbname="$2" >/dev/null', [localPath, pgConninfoFor('postgres')])
  t.equal(await fingerprint(a), expectedA, 'first database restored')
  t.equal(await fingerprint(b), expectedB, 'database with quotes and spaces in its name restored')

  const manifest = JSON.parse(await readFile(`${localPath}.manifest.json`, 'utf8'))
  t.same(manifest.databases, [a, b])
  t.equal(manifest.compression, 'zstd')
})
