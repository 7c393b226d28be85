/**
 * S3 presets: each provider's endpoint, region and addressing, refused inputs, and that the result is a valid s3
 * config the s3 driver accepts (no connection is made).
 */
import t from 'tap'
import { Value } from 'typebox/value'
import { S3Config } from '@cloudpilot/protocol'
import { S3Driver } from '../src/s3.ts'
import { S3_PRESETS, s3ConfigFromPreset } from '../src/s3-presets.ts'

t.test('endpoints as the providers document them', async (t) => {
  t.same(s3ConfigFromPreset('digitalocean_spaces', { region: 'ams3' }), { endpoint: 'https://ams3.digitaloceanspaces.com', region: 'ams3', forcePathStyle: false })
  t.same(s3ConfigFromPreset('wasabi', { region: 'eu-central-1' }), { endpoint: 'https://s3.eu-central-1.wasabisys.com', region: 'eu-central-1', forcePathStyle: false })
  const account = '0123456789abcdef0123456789abcdef'
  t.same(s3ConfigFromPreset('cloudflare_r2', { accountId: account }), { endpoint: `https://${account}.r2.cloudflarestorage.com`, region: 'auto', forcePathStyle: true })
  t.same(s3ConfigFromPreset('cloudflare_r2', { accountId: account.toUpperCase(), jurisdiction: 'eu' }), { endpoint: `https://${account}.eu.r2.cloudflarestorage.com`, region: 'auto', forcePathStyle: true }, 'EU jurisdiction')
  t.same(s3ConfigFromPreset('minio', { endpoint: 'https://minio.example.com:9000/' }), { endpoint: 'https://minio.example.com:9000', region: 'us-east-1', forcePathStyle: true })
  t.same(s3ConfigFromPreset('minio', { endpoint: 'http://10.0.0.5:9000', region: 'eu-west-1' }), { endpoint: 'http://10.0.0.5:9000', region: 'eu-west-1', forcePathStyle: true }, 'MinIO with its own region')
})

t.test('refused inputs', async (t) => {
  t.throws(() => s3ConfigFromPreset('digitalocean_spaces', {}), { code: 'VALIDATION_FAILED' }, 'a region is needed')
  t.throws(() => s3ConfigFromPreset('wasabi', { region: 'evil.com/x' }), { code: 'VALIDATION_FAILED' }, 'a region is a slug, never a host')
  t.throws(() => s3ConfigFromPreset('cloudflare_r2', { accountId: 'not-an-account' }), { code: 'VALIDATION_FAILED' }, 'an R2 account id is 32 hex')
  t.throws(() => s3ConfigFromPreset('cloudflare_r2', { accountId: '0123456789abcdef0123456789abcdef', jurisdiction: 'mars' }), { code: 'VALIDATION_FAILED' }, 'known jurisdictions only')
  t.throws(() => s3ConfigFromPreset('minio', { endpoint: 'ftp://x' }), { code: 'VALIDATION_FAILED' }, 'MinIO needs an http(s) URL')
  t.throws(() => s3ConfigFromPreset('nope' as 'minio', {}), { code: 'VALIDATION_FAILED' }, 'unknown preset')
})

t.test('every preset makes a valid s3 config that the driver accepts', async (t) => {
  const inputs = { digitalocean_spaces: { region: 'nyc3' }, cloudflare_r2: { accountId: 'f'.repeat(32) }, wasabi: { region: 'us-east-1' }, minio: { endpoint: 'https://minio.example.com' } }
  t.same(S3_PRESETS.map((p) => p.id).sort(), Object.keys(inputs).sort(), 'the table lists the four providers')
  for (const preset of S3_PRESETS) {
    t.ok(preset.name !== '' && preset.docs.startsWith('https://'), `${preset.id}: name and docs link`)
    const config = { bucket: 'backups', ...s3ConfigFromPreset(preset.id, inputs[preset.id]) }
    t.ok(Value.Check(S3Config, config), `${preset.id}: valid against the s3 config schema`)
    const driver = new S3Driver(config, { accessKeyId: 'AKIA', secretAccessKey: 'secret' })
    t.equal(driver.bucket, 'backups', `${preset.id}: the s3 driver takes it`)
    await driver.close()
  }
})
