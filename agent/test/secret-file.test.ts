import t from 'tap'
import { spawnSync } from 'node:child_process'
import { readFile, stat } from 'node:fs/promises'
import path from 'node:path'
import { escapePgPassField, mysqlOptionFile, pgPassFile, writeSecretFile } from '../src/sources/secret-file.ts'
import { findTool } from '../src/sources/tool-detect.ts'

const printDefaults = await findTool('my_print_defaults')

t.test('a secret file is 0600 in a private 0700 directory, and remove() deletes both', async (t) => {
  const secret = await writeSecretFile('pgpass', 'content\n')
  t.teardown(async () => { await secret.remove() })
  t.equal((await stat(secret.path)).mode & 0o777, 0o600)
  t.equal((await stat(path.dirname(secret.path))).mode & 0o777, 0o700)
  t.equal(await readFile(secret.path, 'utf8'), 'content\n')
  await secret.remove()
  await t.rejects(stat(path.dirname(secret.path)), { code: 'ENOENT' })
  await secret.remove()
})

const PASSWORDS = [
  'plain', 'a\\b"c#d e ', ' leading and trailing ', "it's", '"quoted"', 'tab\there', 'back\\', '\\\\double',
  'new\nline', 'cr\rhere', 'ünïcödé 🚀', 'x\\n literal', '#', '=equals=', '[client]', '\\"', 'semi;colon',
]

t.test('the MySQL option file gives the client back exactly the password (checked with my_print_defaults)', { skip: printDefaults === null ? 'my_print_defaults (mariadb-client) not installed' : false }, async (t) => {
  for (const password of PASSWORDS) {
    const secret = await writeSecretFile('my.cnf', mysqlOptionFile({ password }))
    try {
      const res = spawnSync(printDefaults as string, [`--defaults-file=${secret.path}`, 'client'], { encoding: 'utf8' })
      t.equal(res.status, 0, res.stderr)
      t.equal(res.stdout, `--password=${password}\n`, JSON.stringify(password))
    } finally {
      await secret.remove()
    }
  }
})

t.test('PGPASSFILE lines escape : and \\ and refuse line breaks', async (t) => {
  t.equal(pgPassFile({ username: 'u:ser', password: 'p:a\\ss' }), '*:*:*:u\\:ser:p\\:a\\\\ss\n')
  t.equal(pgPassFile({ password: 'x' }), '*:*:*:*:x\n')
  t.throws(() => escapePgPassField('a\nb'), { code: 'ACCESS_DENIED' })
})
