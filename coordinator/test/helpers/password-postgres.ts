import { spawn } from 'node:child_process'
import { chmod, chown, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { readdirSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import type { Test } from 'tap'
import { freePort } from './processes.ts'

/**
 * A private PostgreSQL cluster with password (scram-sha-256) authentication, for tests of wrong passwords:
 * the shared server on :5432 trusts loopback, so it accepts any password. Started with the server binaries of
 * the installed PostgreSQL, as the postgres OS user, on a free port; removed in teardown.
 */
export async function startPasswordPostgres (t: Test, password: string): Promise<{ port: number, user: string, password: string, stop: () => Promise<void> }> {
  const versions = readdirSync('/usr/lib/postgresql').sort()
  const bin = path.join('/usr/lib/postgresql', versions.at(-1) ?? '15', 'bin')
  const dir = await mkdtemp(path.join(os.tmpdir(), 'cp-pgpw-'))
  const data = path.join(dir, 'data')
  const pwfile = path.join(dir, 'pw')
  await writeFile(pwfile, password + '\n', { mode: 0o600 })
  const pgUid = Number((await run('id', ['-u', 'postgres'])).stdout.trim())
  const pgGid = Number((await run('id', ['-g', 'postgres'])).stdout.trim())
  await chown(dir, pgUid, pgGid)
  await chown(pwfile, pgUid, pgGid)
  await chmod(dir, 0o700)
  const asPostgres = (cmd: string, args: string[]) => run('runuser', ['-u', 'postgres', '--', cmd, ...args])
  const init = await asPostgres(path.join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '--auth=scram-sha-256', `--pwfile=${pwfile}`, '-E', 'UTF8', '--no-sync'])
  if (init.code !== 0) throw new Error(`initdb failed: ${init.stderr}`)
  const port = await freePort()
  const start = await asPostgres(path.join(bin, 'pg_ctl'), ['-D', data, '-l', path.join(dir, 'log'), '-w', '-o', `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off`, 'start'])
  if (start.code !== 0) throw new Error(`pg_ctl start failed: ${start.stderr} ${start.stdout}`)
  const stop = async (): Promise<void> => {
    await asPostgres(path.join(bin, 'pg_ctl'), ['-D', data, '-m', 'immediate', 'stop'])
    await rm(dir, { recursive: true, force: true })
  }
  t.teardown(stop)
  return { port, user: 'postgres', password, stop }
}

function run (cmd: string, args: string[]): Promise<{ code: number | null, stdout: string, stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    p.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
    p.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
    p.once('close', (code) => resolve({ code, stdout, stderr }))
  })
}
