/**
 * Opens one destination type through openDestination and prints, as JSON, which SDK packages the process loaded
 * (every module load, ESM and CommonJS, is seen through a module.registerHooks load hook registered first).
 * argv: <destination type>
 */
import { generateKeyPairSync } from 'node:crypto'
import { registerHooks } from 'node:module'

const loaded = new Set<string>()
registerHooks({
  load (url, context, nextLoad) {
    loaded.add(url)
    return nextLoad(url, context)
  },
})

const SDKS: Record<string, RegExp> = {
  aws: /node_modules\/@aws-sdk\//,
  azure: /node_modules\/@azure\//,
  gcs: /node_modules\/@google-cloud\//,
  googleAuth: /node_modules\/google-auth-library\//,
  ssh2: /node_modules\/(ssh2|ssh2-sftp-client)\//,
}

const type = process.argv[2] ?? ''
const key = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()
const serviceAccountJson = JSON.stringify({ type: 'service_account', client_email: 'x@y.iam.gserviceaccount.com', private_key: key, token_uri: 'https://oauth2.googleapis.com/token' })
const inputs: Record<string, { config: Record<string, unknown>, credentials: Record<string, unknown> }> = {
  local: { config: { path: '/tmp' }, credentials: {} },
  s3: { config: { bucket: 'b', region: 'us-east-1' }, credentials: { accessKeyId: 'a', secretAccessKey: 'b' } },
  sftp: { config: { host: 'backup.example.com', username: 'u', path: '/srv' }, credentials: { password: 'p' } },
  azure_blob: { config: { container: 'backups' }, credentials: { accountName: 'acct', accountKey: Buffer.from('k').toString('base64') } },
  gcs: { config: { bucket: 'backups' }, credentials: { serviceAccountJson } },
  google_drive: { config: { folderId: 'abc123' }, credentials: { serviceAccountJson } },
  cloudinary: { config: { cloudName: 'demo' }, credentials: { apiKey: '1', apiSecret: 's' } },
}
const { openDestination } = await import('../../src/open-destination.ts')
const before = Object.fromEntries(Object.entries(SDKS).map(([name, re]) => [name, [...loaded].some((u) => re.test(u))]))
const input = inputs[type]
if (input === undefined) throw new Error(`unknown type ${type}`)
const driver = await openDestination({ type: type as 'local', ...input })
await driver.close()
const after = Object.fromEntries(Object.entries(SDKS).map(([name, re]) => [name, [...loaded].some((u) => re.test(u))]))
process.stdout.write(JSON.stringify({ type: driver.type, before, after }) + '\n')
