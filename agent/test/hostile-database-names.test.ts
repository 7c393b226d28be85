import t from 'tap'
import { access } from 'node:fs/promises'
import { createRunBackup } from '../src/backup/run-backup.ts'
import {
  MY, PG, backupContext, createMyDatabase, createPgDatabase, databaseJob, decompress, dropPgDatabase, myIdent, mysql,
  pgConninfoFor, psql, rand, serviceSkip, shell,
} from './helpers/backup-fixtures.ts'

const pgSkip = await serviceSkip('PostgreSQL', PG.port)
const mySkip = await serviceSkip('MariaDB', MY.port)
const runBackup = createRunBackup()

async function exists (file: string): Promise<boolean> {
  return await access(file).then(() => true, () => false)
}

/**
 * Names that would run a command in a shell, be taken as an option, or be taken as a connection string. The
 * conninfo one points at a closed loopback port (never a real host name, so a mistake cannot reach the network):
 * if it were parsed as conninfo the dump would fail with "connection refused" instead of dumping the database.
 */
function hostileNames (): { names: string[], traps: string[] } {
  const r = rand()
  const traps = [`/tmp/cp-pwned-${r}`, `/tmp/cp-pwned-sub-${r}`, `/tmp/cp-x-${r}`]
  return {
    names: [
      `x; touch ${traps[0]}`,
      `$(touch ${traps[1]})`,
      `--file=${traps[2]}`,
      `host=127.0.0.9 port=1 dbname=x${r}`,
      `$(id) "q'uo\`te ${r}`,
    ],
    traps,
  }
}

t.test('PostgreSQL: hostile database names are dumped as names, never as shell, option or conninfo', { skip: pgSkip }, async (t) => {
  const { names, traps } = hostileNames()
  for (const name of names) {
    await createPgDatabase(t, name)
    await psql(name, `CREATE TABLE marker (v text); INSERT INTO marker VALUES (${`'${name.replace(/'/g, "''")}'`});`)
  }

  for (const name of names) {
    const result = await runBackup(databaseJob({ engine: 'postgresql', ...PG, databases: [name] }, { keepLocal: true }), await backupContext(t))
    const dump = await decompress(result.localPath as string)
    t.ok(dump.includes(name), `the dump of ${JSON.stringify(name)} holds its marker row`)
  }

  // All in one multi-database script, restored with psql -d postgres: \connect must take each as a name too.
  const all = await runBackup(databaseJob({ engine: 'postgresql', ...PG, databases: names }, { keepLocal: true }), await backupContext(t))
  for (const name of names) await dropPgDatabase(name)
  await shell('gunzip -c "$1" | psql -X -q -v ON_ERROR_STOP=1 --dbname="$2" >/dev/null', [all.localPath as string, pgConninfoFor('postgres')])
  for (const name of names) {
    t.equal((await psql(name, 'SELECT v FROM marker;')).trim(), name, `${JSON.stringify(name)} restored under its own name`)
  }
  for (const trap of traps) t.notOk(await exists(trap), `${trap} was not created`)
})

t.test('MariaDB: hostile database names are dumped as names (after --), never as shell or option', { skip: mySkip }, async (t) => {
  const { names, traps } = hostileNames()
  for (const name of names) {
    await createMyDatabase(t, name)
    await mysql(`CREATE TABLE ${myIdent(name)}.marker (v VARCHAR(200)); INSERT INTO ${myIdent(name)}.marker VALUES ('${name.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}');`)
  }
  for (const name of names) {
    const result = await runBackup(databaseJob({ engine: 'mysql', host: MY.host, port: MY.port, username: MY.username, databases: [name] }, { keepLocal: true }), await backupContext(t))
    const dump = await decompress(result.localPath as string)
    t.match(dump, /INSERT INTO `marker` VALUES/, `the dump of ${JSON.stringify(name)} holds its table`)
    t.match(dump, /-- Dump completed/)
  }
  const all = await runBackup(databaseJob({ engine: 'mysql', host: MY.host, port: MY.port, username: MY.username, databases: names }, { keepLocal: true }), await backupContext(t))
  const dump = await decompress(all.localPath as string)
  for (const name of names) t.ok(dump.includes(`CREATE DATABASE /*!32312 IF NOT EXISTS*/ ${myIdent(name)}`), `${JSON.stringify(name)} in the --databases dump`)
  for (const trap of traps) t.notOk(await exists(trap), `${trap} was not created`)
})
