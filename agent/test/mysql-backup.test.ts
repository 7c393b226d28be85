import t from 'tap'
import path from 'node:path'
import { createRunBackup } from '../src/backup/run-backup.ts'
import {
  MY, backupContext, createMyDatabase, createMyUser, databaseJob, localDestination, myIdent, mysql, serviceSkip,
  shell, tempDir,
} from './helpers/backup-fixtures.ts'

const skip = await serviceSkip('MariaDB', MY.port)
const runBackup = createRunBackup()

async function fill (database: string, rows = 3000): Promise<void> {
  await mysql(`
    CREATE TABLE items (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(200) NOT NULL, data VARBINARY(64), price DECIMAL(12,2), created DATETIME) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
    INSERT INTO items (name, data, price, created)
      SELECT CONCAT('item ', g, ' – Grüße 🚀 日本語 ''quoted'' \\\\ back'),
             IF(g % 7 = 0, NULL, UNHEX(CONCAT(MD5(g), '00FF'))),
             g * 1.25,
             TIMESTAMP('2024-01-01 00:00:00') + INTERVAL g MINUTE
      FROM (SELECT seq AS g FROM seq_1_to_${rows}) s;
    CREATE TABLE \`odd \`\`name\`\`\` (k VARCHAR(20) PRIMARY KEY, v INT);
    INSERT INTO \`odd \`\`name\`\`\` VALUES ('a', 1), ('b', 2);
    CREATE VIEW cheap AS SELECT id, name FROM items WHERE price < 100;
    CREATE FUNCTION twice(x INT) RETURNS INT DETERMINISTIC RETURN x * 2;
    CREATE TRIGGER items_bi BEFORE INSERT ON items FOR EACH ROW SET NEW.price = IFNULL(NEW.price, 0);
  `, database)
}

async function fingerprint (database: string): Promise<string> {
  return await mysql(`
    SELECT CONCAT(COUNT(*), ':', MD5(GROUP_CONCAT(CONCAT_WS('#', id, name, HEX(data), price, created) ORDER BY id SEPARATOR '|'))) FROM items;
    SELECT COUNT(*) FROM \`odd \`\`name\`\`\`;
    SELECT COUNT(*) FROM cheap;
    SELECT twice(21);
    SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE();
  `, database)
}

t.before(async () => {
  // GROUP_CONCAT of a few thousand rows needs more than the default 1 KiB.
  await mysql('SET GLOBAL group_concat_max_len = 16777216;')
})

t.test('a MariaDB database round-trips through gunzip | mysql', { skip }, async (t) => {
  const db = await createMyDatabase(t)
  await fill(db)
  const expected = await fingerprint(db)
  t.match(expected, /^3000:[0-9a-f]{32}\n2\n79\n42\n1\n$/)
  // A password with every character the option-file escaping must handle.
  const password = 'p"a\'ss\\wo#rd ;`$x `'
  const user = await createMyUser(t, password, [db])

  const dest = await tempDir(t)
  const ctx = await backupContext(t)
  const job = databaseJob({ engine: 'mysql', host: MY.host, port: MY.port, username: user, password, databases: [db] }, { destination: localDestination(dest), keepLocal: true })
  const result = await runBackup(job, ctx)
  t.equal(result.offsiteStatus, 'uploaded')
  t.ok(result.localPath !== null)
  t.match(result.manifest.tools, { 'mariadb-dump': /^\d+\.\d+/ })

  const file = path.join(dest, job.objectKey)
  const dump = await shell('gunzip -c "$1"', [file])
  t.notMatch(dump, /CREATE DATABASE|^USE /m, 'a single-database dump neither creates nor selects the database')
  t.match(dump, /-- Dump completed/)

  const restored = await createMyDatabase(t)
  await shell('gunzip -c "$1" | mysql --no-defaults --host=127.0.0.1 --user=root --default-character-set=utf8mb4 --database="$2"', [file, restored])
  t.equal(await fingerprint(restored), expected, 'restored data, view, routine and trigger equal the source')
})

t.test('several MariaDB databases become one dump with --databases', { skip }, async (t) => {
  const a = await createMyDatabase(t)
  const b = await createMyDatabase(t)
  await fill(a, 500)
  await fill(b, 700)
  const expectedA = await fingerprint(a)
  const expectedB = await fingerprint(b)

  const ctx = await backupContext(t)
  const job = databaseJob({ engine: 'mysql', host: MY.host, port: MY.port, username: MY.username, databases: [a, b] }, { keepLocal: true })
  const result = await runBackup(job, ctx)
  const localPath = result.localPath as string

  await mysql(`DROP DATABASE ${myIdent(a)}; DROP DATABASE ${myIdent(b)};`)
  await shell('gunzip -c "$1" | mysql --no-defaults --host=127.0.0.1 --user=root --default-character-set=utf8mb4', [localPath])
  t.equal(await fingerprint(a), expectedA)
  t.equal(await fingerprint(b), expectedB)
})
