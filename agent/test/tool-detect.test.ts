import t from 'tap'
import { spawnSync } from 'node:child_process'
import { chmod, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { clearToolCache, detectTools, findTool, parseVersion, toolVersion } from '../src/sources/tool-detect.ts'
import { tempDir } from './helpers/backup-fixtures.ts'

t.test('banners of the real tools parse to their versions', async (t) => {
  t.equal(parseVersion('pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)'), '15.20')
  t.equal(parseVersion('mysqldump  Ver 10.19 Distrib 10.11.19-MariaDB, for debian-linux-gnu (x86_64)'), '10.11.19-MariaDB')
  t.equal(parseVersion('mariadb-dump from 11.4.2-MariaDB, client 10.19 for debian-linux-gnu (x86_64)'), '11.4.2-MariaDB')
  t.equal(parseVersion('mysqldump  Ver 8.0.36 for Linux on x86_64 (MySQL Community Server - GPL)'), '8.0.36')
  t.equal(parseVersion('*** Zstandard CLI (64-bit) v1.5.4, by Yann Collet ***'), '1.5.4')
  t.equal(parseVersion('pigz 2.6'), '2.6')
  t.equal(parseVersion('no version here'), null)
})

t.test('detectTools finds what is on PATH with versions, and caches', async (t) => {
  const tools = await detectTools()
  const pgDump = spawnSync('pg_dump', ['--version'], { encoding: 'utf8' })
  if (pgDump.status === 0) t.equal(tools.pg_dump, parseVersion(pgDump.stdout))
  t.notOk('my_print_defaults' in tools, 'only the known tools')
  t.equal(toolVersion('pg_dump'), toolVersion('pg_dump'), 'the same cached promise')
})

t.test('a PATH without the tools finds none; a fake one is found by absolute path', async (t) => {
  const empty = await tempDir(t)
  t.same(await detectTools(empty), {})
  t.equal(await findTool('pg_dump', empty), null)
  const dir = await tempDir(t)
  await writeFile(path.join(dir, 'zstd'), '#!/bin/sh\necho "*** Zstandard CLI (64-bit) v9.9.9, by test ***"\n')
  await writeFile(path.join(dir, 'pigz'), 'not executable')
  await chmod(path.join(dir, 'zstd'), 0o755)
  t.same(await detectTools(`relative/dir:${dir}`), { zstd: '9.9.9' }, 'relative PATH entries are ignored; non-executables are not tools')
  clearToolCache()
  t.equal(await findTool('zstd', dir), path.join(dir, 'zstd'))
})
