/**
 * Azurite's blob service (npm `azurite`, the Azure Storage emulator Microsoft publishes) as a child process on a
 * free loopback port, in-memory, with one container:
 *
 *   const azurite = await startAzurite()
 *   t.teardown(() => azurite.close())
 *   // destination: { type: 'azure_blob', config: { container: azurite.container },
 *   //   credentials: { connectionString: azurite.connectionString } }  (open with allowPrivateEndpoints)
 *
 * Flags: `--disableTelemetry` (it would reach out to a telemetry host otherwise) and `--skipApiVersionCheck`
 * (checked with azurite 3.35.0 and @azure/storage-blob 12.32: the SDK sends API version 2026-04-06, which
 * azurite refuses with 400 InvalidHeaderValue without it). `tls` makes it serve HTTPS with the given PEM files.
 */
import { spawn } from 'node:child_process'
import { createRequire } from 'node:module'
import path from 'node:path'
import { freePort } from './sshd.ts'

export const AZURITE_ACCOUNT = 'devstoreaccount1'
/** Azurite's well-known development account key (public, documented by Microsoft). */
export const AZURITE_KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='

export interface AzuriteHandle {
  /** `http://127.0.0.1:<port>/devstoreaccount1` */
  accountUrl: string
  port: number
  accountName: string
  accountKey: string
  container: string
  connectionString: string
  log: () => string
  close: () => Promise<void>
}

const require = createRequire(import.meta.url)

/** Why azurite cannot run here, or undefined. */
export function azuriteUnavailable (): string | undefined {
  try {
    require.resolve('azurite/package.json')
    return undefined
  } catch {
    return 'npm package azurite is not installed (devDependency)'
  }
}

export async function startAzurite (options: { tls?: { cert: string, key: string }, container?: string } = {}): Promise<AzuriteHandle> {
  const main = path.join(path.dirname(require.resolve('azurite/package.json')), 'dist/src/blob/main.js')
  const container = options.container ?? 'backups'
  let lastError: unknown
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort()
    const args = [main, '--blobHost', '127.0.0.1', '--blobPort', String(port), '--inMemoryPersistence', '--disableTelemetry', '--skipApiVersionCheck', '--silent']
    if (options.tls !== undefined) args.push('--cert', options.tls.cert, '--key', options.tls.key)
    // The Node running the tests (24), not whatever `node` is first on PATH.
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NODE_OPTIONS: '' } })
    let log = ''
    const collect = (d: Buffer): void => { log = (log + d.toString()).slice(-100_000) }
    child.stdout.on('data', collect)
    child.stderr.on('data', collect)
    const ready = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), 15_000)
      const check = (): void => { if (/successfully listens/i.test(log)) { clearTimeout(timer); resolve(true) } }
      child.stdout.on('data', check)
      child.once('exit', () => { clearTimeout(timer); resolve(false) })
    })
    if (!ready) {
      lastError = new Error(`azurite did not start on port ${port}: ${log}`)
      child.kill('SIGTERM')
      continue
    }
    const scheme = options.tls === undefined ? 'http' : 'https'
    const accountUrl = `${scheme}://127.0.0.1:${port}/${AZURITE_ACCOUNT}`
    const connectionString = `DefaultEndpointsProtocol=${scheme};AccountName=${AZURITE_ACCOUNT};AccountKey=${AZURITE_KEY};BlobEndpoint=${accountUrl};`
    if (options.tls === undefined) {
      const { BlobServiceClient } = await import('@azure/storage-blob')
      await BlobServiceClient.fromConnectionString(connectionString).getContainerClient(container).createIfNotExists()
    }
    let closed = false
    return {
      accountUrl,
      port,
      accountName: AZURITE_ACCOUNT,
      accountKey: AZURITE_KEY,
      container,
      connectionString,
      log: () => log,
      close: async () => {
        if (closed) return
        closed = true
        if (child.exitCode !== null || child.signalCode !== null) return
        const exited = new Promise((resolve) => child.once('exit', resolve))
        child.kill('SIGTERM')
        await exited
      },
    }
  }
  throw lastError instanceof Error ? lastError : new Error('azurite did not start')
}
