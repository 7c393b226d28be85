import t from 'tap'
import { SectionMissing, multiDatabaseLayout, splitAtDelimiters } from '../src/restore/dump-sections.ts'
import { databaseSection, multiDatabaseHeader } from '../src/sources/postgres-dump.ts'

async function split (input: Buffer, delimiters: Buffer[], chunkSize: number): Promise<string[]> {
  const chunks: Buffer[] = []
  for (let i = 0; i < input.length; i += chunkSize) chunks.push(input.subarray(i, i + chunkSize))
  const out: string[] = []
  for await (const { segment, chunk } of splitAtDelimiters(chunks, delimiters)) out[segment] = (out[segment] ?? '') + chunk.toString('utf8')
  return Array.from(out, (s) => s ?? '')
}

t.test('segments are the bytes between the delimiters, whatever the chunk boundaries', async (t) => {
  const input = Buffer.from('head<<A>>first body<<B>>second body')
  const delimiters = [Buffer.from('<<A>>'), Buffer.from('<<B>>')]
  for (let size = 1; size <= input.length; size++) {
    t.same(await split(input, delimiters, size), ['head', 'first body', 'second body'], `chunks of ${size}`)
  }
})

t.test('only the next expected delimiter counts: a later one seen early is data', async (t) => {
  const input = Buffer.from('x<<B>>y<<A>>z<<B>>w')
  t.same(await split(input, [Buffer.from('<<A>>'), Buffer.from('<<B>>')], 3), ['x<<B>>y', 'z', 'w'])
})

t.test('a stream that ends before every delimiter was seen fails', async (t) => {
  const err = await split(Buffer.from('head<<A>>body'), [Buffer.from('<<A>>'), Buffer.from('<<B>>')], 4).catch((e: unknown) => e)
  t.ok(err instanceof SectionMissing)
  t.equal((err as SectionMissing).index, 1, 'names the missing delimiter')
})

t.test('the PostgreSQL multi-database script splits into each database\'s own dump', async (t) => {
  const names = ['shop', 'odd "name" it\'s', 'ünï']
  const layout = multiDatabaseLayout('postgresql', names)
  const bodies = names.map((n) => `-- dump of ${n}\nCREATE TABLE t (x int);\n-- cloudpilot:database "not a real marker"\n`)
  const script = Buffer.from(multiDatabaseHeader(names) + names.map((n, i) => databaseSection(n) + bodies[i]).join(''))
  const segments = await split(script, layout.delimiters, 7)
  for (let i = 0; i < names.length; i++) {
    const seg = segments.findIndex((_, s) => layout.databaseAt(s) === i)
    t.equal(segments[seg], bodies[i], `database ${i} gets exactly its dump (no CREATE DATABASE, no \\connect)`)
  }
})

t.test('the MySQL --databases dump: header, then each database without its CREATE DATABASE and USE', async (t) => {
  const layout = multiDatabaseLayout('mysql', ['a', 'b`c'])
  const dump = Buffer.from([
    '/*!40101 SET NAMES utf8mb4 */;', '',
    '--', '-- Current Database: `a`', '--', '',
    'CREATE DATABASE /*!32312 IF NOT EXISTS*/ `a` /*!40100 DEFAULT CHARACTER SET utf8mb4 */;', '',
    'USE `a`;', 'CREATE TABLE t1 (x int);', '',
    '--', '-- Current Database: `b``c`', '--', '',
    'CREATE DATABASE /*!32312 IF NOT EXISTS*/ `b``c`;', '',
    'USE `b``c`;', 'CREATE TABLE t2 (x int);', '-- Dump completed', '',
  ].join('\n'))
  const segments = await split(dump, layout.delimiters, 5)
  t.equal(segments[layout.preambleSegment ?? -1], '/*!40101 SET NAMES utf8mb4 */;\n')
  t.equal(segments[2], 'CREATE TABLE t1 (x int);\n')
  t.equal(layout.databaseAt(2), 0)
  t.equal(segments[4], 'CREATE TABLE t2 (x int);\n-- Dump completed\n')
  t.equal(layout.databaseAt(4), 1)
  t.equal(layout.databaseAt(3), null, 'the CREATE DATABASE segment belongs to no database')
})
