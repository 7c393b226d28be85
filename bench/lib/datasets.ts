/**
 * Generated data, so that a fresh clone measures the same thing: a PostgreSQL database and a MariaDB database of
 * about the asked size (rows of mixed text: ids, names, hex digests, repeated prose, numbers, times), and a file
 * tree of many small files plus a few large ones. Each registers its removal.
 */
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdir, rm, writeFile, open } from 'node:fs/promises'
import path from 'node:path'
import { promisify } from 'node:util'
import { onCleanup } from './cleanup.ts'

const run = promisify(execFile)
/** Bytes one generated row takes in a table, about (measured on PostgreSQL 15; MariaDB InnoDB is similar). */
const ROW_BYTES = 190

export const PG = { host: '127.0.0.1', port: 5432, username: 'postgres' } as const
export const MY = { host: '127.0.0.1', port: 3306, username: 'root' } as const

export async function psql (db: string, sql: string): Promise<string> {
  const { stdout } = await run('psql', ['-h', PG.host, '-p', String(PG.port), '-U', PG.username, '-d', db, '-v', 'ON_ERROR_STOP=1', '-qAtX', '-c', sql], { maxBuffer: 16 * 1024 * 1024 })
  return stdout.trim()
}

export async function mariadb (db: string | null, sql: string): Promise<string> {
  const args = ['-h', MY.host, '-P', String(MY.port), '-u', MY.username, '-N', '-B', ...(db === null ? [] : [db]), '-e', sql]
  const { stdout } = await run('mariadb', args, { maxBuffer: 16 * 1024 * 1024 })
  return stdout.trim()
}

export function benchName (what: string): string {
  return `cp_bench_${what}_${process.pid}`
}

/** A PostgreSQL database to drop at cleanup (also when the benchmark fails half-way). */
export async function pgDatabase (name: string): Promise<string> {
  await psql('postgres', `drop database if exists ${name} with (force)`)
  await psql('postgres', `create database ${name}`)
  onCleanup(`drop database ${name}`, async () => { await psql('postgres', `drop database if exists ${name} with (force)`) })
  return name
}

export interface DatabaseData { name: string, rows: number, sizeBytes: number }

/** About sizeMb of table data in one PostgreSQL database (generate_series, in batches of 1M rows). */
export async function generatePostgres (sizeMb: number): Promise<DatabaseData> {
  const name = await pgDatabase(benchName('pg'))
  const rows = Math.max(1000, Math.round(sizeMb * 1024 * 1024 / ROW_BYTES))
  await psql(name, `create table orders (id bigint primary key, customer text not null, sku text not null, digest text not null,
    note text, amount numeric(12,2) not null, created_at timestamptz not null)`)
  for (let from = 1; from <= rows; from += 1_000_000) {
    const to = Math.min(rows, from + 999_999)
    await psql(name, `insert into orders select g, 'customer ' || (g % 50000), 'SKU-' || lpad((g % 9973)::text, 6, '0'),
      md5(g::text) || md5((g * 31)::text), case when g % 3 = 0 then 'delivered to the front door, signed by ' || (g % 977) else 'standard shipping' end,
      (g % 100000) / 100.0, timestamptz '2025-01-01' + g * interval '7 seconds' from generate_series(${from}, ${to}) g`)
  }
  await psql(name, 'vacuum analyze orders')
  const sizeBytes = Number(await psql(name, `select pg_database_size('${name}')`))
  return { name, rows, sizeBytes }
}

/** About sizeMb of InnoDB table data in one MariaDB database (the Sequence engine's seq_1_to_N, in batches). */
export async function generateMariadb (sizeMb: number): Promise<DatabaseData> {
  const name = benchName('my')
  await mariadb(null, `drop database if exists ${name}; create database ${name}`)
  onCleanup(`drop database ${name} (MariaDB)`, async () => { await mariadb(null, `drop database if exists ${name}`) })
  const rows = Math.max(1000, Math.round(sizeMb * 1024 * 1024 / ROW_BYTES))
  await mariadb(name, `create table orders (id bigint primary key, customer varchar(32) not null, sku varchar(16) not null, digest char(64) not null,
    note varchar(80), amount decimal(12,2) not null, created_at datetime not null) engine=InnoDB`)
  for (let from = 1; from <= rows; from += 500_000) {
    const to = Math.min(rows, from + 499_999)
    await mariadb(name, `insert into orders select seq, concat('customer ', seq % 50000), concat('SKU-', lpad(seq % 9973, 6, '0')),
      concat(md5(seq), md5(seq * 31)), if(seq % 3 = 0, concat('delivered to the front door, signed by ', seq % 977), 'standard shipping'),
      (seq % 100000) / 100.0, '2025-01-01' + interval (seq * 7) second from seq_${from}_to_${to}`)
  }
  await mariadb(name, 'analyze table orders')
  const sizeBytes = Number(await mariadb(null, `select sum(data_length + index_length) from information_schema.tables where table_schema = '${name}'`))
  return { name, rows, sizeBytes }
}

export interface FileTree { dir: string, files: number, bytes: number }

const WORDS = 'the quick brown fox jumps over lazy dog config server backup value true false null user admin page index style script'.split(' ')

/** Text-like content (compressible, not trivially) of about n bytes, from a seed. */
function textFile (seed: number, n: number): Buffer {
  const parts: string[] = []
  let size = 0
  let x = seed * 2654435761 % 4294967296
  while (size < n) {
    x = (x * 1103515245 + 12345) % 2147483648
    const w = WORDS[x % WORDS.length] as string
    const piece = x % 7 === 0 ? `${w}=${x.toString(16)}\n` : `${w} `
    parts.push(piece)
    size += piece.length
  }
  return Buffer.from(parts.join('').slice(0, n))
}

/**
 * `count` small files (200 B..4 KB of text, 200 per directory) plus `largeCount` large files of `largeMb` each
 * (half random bytes, half text: like media plus logs) under dir.
 */
export async function generateFileTree (dir: string, count: number, largeCount: number, largeMb: number): Promise<FileTree> {
  await mkdir(dir, { recursive: true })
  onCleanup(`remove ${dir}`, async () => { await rm(dir, { recursive: true, force: true }) })
  let bytes = 0
  const perDir = 200
  for (let d = 0; d * perDir < count; d++) await mkdir(path.join(dir, 'site', `d${String(d).padStart(4, '0')}`), { recursive: true })
  let next = 0
  const worker = async (): Promise<void> => {
    for (;;) {
      const i = next++
      if (i >= count) return
      const size = 200 + (i * 7919) % 3900
      const file = path.join(dir, 'site', `d${String(Math.floor(i / perDir)).padStart(4, '0')}`, `f${i}.txt`)
      await writeFile(file, textFile(i, size))
      bytes += size
    }
  }
  await Promise.all(Array.from({ length: 32 }, worker))
  await mkdir(path.join(dir, 'large'), { recursive: true })
  for (let i = 0; i < largeCount; i++) {
    const fh = await open(path.join(dir, 'large', `blob${i}.bin`), 'w')
    const chunk = 1024 * 1024
    for (let m = 0; m < largeMb; m++) {
      await fh.write(m % 2 === 0 ? randomBytes(chunk) : textFile(i * 100000 + m, chunk))
      bytes += chunk
    }
    await fh.close()
  }
  return { dir, files: count + largeCount, bytes }
}
