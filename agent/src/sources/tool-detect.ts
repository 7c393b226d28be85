import { execFile } from 'node:child_process'
import { access, constants, stat } from 'node:fs/promises'
import path from 'node:path'
import { SECOND } from '@cloudpilot/protocol'

/** The tools the agent reports in its hello and uses for dumps, restores and streams. */
export const KNOWN_TOOLS = [
  'mysqldump', 'mariadb-dump', 'mysql', 'mariadb', 'pg_dump', 'psql', 'pg_restore', 'zstd', 'pigz',
  'pg_receivewal', 'mysqlbinlog', 'mariadb-binlog',
] as const
export type ToolName = (typeof KNOWN_TOOLS)[number]

const VERSION_TIMEOUT_MS = 5 * SECOND

const locations = new Map<string, Promise<string | null>>()
const versions = new Map<string, Promise<string | null>>()

/** The PATH tools are looked up on: the given one, else the agent's own. */
export function toolPath (pathValue?: string): string {
  return pathValue ?? process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin'
}

/** Absolute path of an executable on PATH, or null (cached per PATH). */
export function findTool (name: string, pathValue?: string): Promise<string | null> {
  const searchPath = toolPath(pathValue)
  const key = `${searchPath}\0${name}`
  let found = locations.get(key)
  if (found === undefined) {
    found = lookup(name, searchPath)
    locations.set(key, found)
  }
  return found
}

async function lookup (name: string, searchPath: string): Promise<string | null> {
  for (const dir of searchPath.split(':')) {
    if (dir === '' || !path.isAbsolute(dir)) continue
    const candidate = path.join(dir, name)
    try {
      const s = await stat(candidate)
      if (!s.isFile()) continue
      await access(candidate, constants.X_OK)
      return candidate
    } catch {
      // not here
    }
  }
  return null
}

/** Version of a tool as it reports it (`15.20`, `10.11.19-MariaDB`, `1.5.4`), or null when it is absent. */
export function toolVersion (name: string, pathValue?: string): Promise<string | null> {
  const searchPath = toolPath(pathValue)
  const key = `${searchPath}\0${name}`
  let version = versions.get(key)
  if (version === undefined) {
    version = findTool(name, searchPath).then(async (file) => file === null ? null : await readVersion(file))
    versions.set(key, version)
  }
  return version
}

/** Every known tool found on PATH with its version, e.g. `{ pg_dump: '15.20', zstd: '1.5.4' }` (cached). */
export async function detectTools (pathValue?: string): Promise<Record<string, string>> {
  const entries = await Promise.all(KNOWN_TOOLS.map(async (name) => [name, await toolVersion(name, pathValue)] as const))
  const tools: Record<string, string> = {}
  for (const [name, version] of entries) if (version !== null) tools[name] = version
  return tools
}

/** Forgets cached look-ups (after installing a package, and in tests). */
export function clearToolCache (): void {
  locations.clear()
  versions.clear()
}

async function readVersion (file: string): Promise<string> {
  const output = await new Promise<string>((resolve) => {
    execFile(file, ['--version'], { timeout: VERSION_TIMEOUT_MS, env: { PATH: process.env.PATH ?? '', LC_ALL: 'C' }, maxBuffer: 64 * 1024 }, (_err, stdout, stderr) => {
      resolve(`${String(stdout)}\n${String(stderr)}`)
    })
  })
  return parseVersion(output) ?? 'unknown'
}

/** Extracts the version from a `--version` banner. */
export function parseVersion (banner: string): string | null {
  // MariaDB/MySQL clients: "mysqldump  Ver 10.19 Distrib 10.11.19-MariaDB, for debian-linux-gnu" (the server
  // release is what matters) or "mariadb-dump from 11.4.2-MariaDB, client 10.19 ...".
  const distrib = /\bDistrib ([0-9][^\s,]*)/.exec(banner) ?? /\bfrom ([0-9][^\s,]*)/.exec(banner)
  if (distrib?.[1] !== undefined) return distrib[1]
  const generic = /\bv?([0-9]+\.[0-9]+(?:\.[0-9]+)?(?:[-+][0-9A-Za-z.]+)?)/.exec(banner)
  return generic?.[1] ?? null
}
