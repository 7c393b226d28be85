import t from 'tap'
import { S3Driver } from '../src/s3.ts'
import { runConformance } from './conformance.ts'
import { startS3rver } from './helpers/s3rver.ts'

const s3 = await startS3rver()
t.teardown(() => s3.close())

const prefix = 'cp-conformance/'
/** Object keys for which the driver sent AbortMultipartUpload (s3rver answers 405 and cannot list uploads). */
const abortedUploads: string[] = []
const warnings: Array<{ message: string, details: Record<string, unknown> }> = []
let driver: S3Driver | undefined

runConformance(t, 's3 (s3rver)', async () => {
  driver = new S3Driver(
    { bucket: s3.bucket, region: s3.region, endpoint: s3.endpoint, forcePathStyle: true, prefix },
    { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
    { allowPrivateEndpoints: true, onWarning: (message, details) => { warnings.push({ message, details }) } },
  )
  driver.client.middlewareStack.add((next, context) => async (args) => {
    if (context.commandName === 'AbortMultipartUploadCommand') abortedUploads.push(String((args.input as { Key?: unknown }).Key))
    return await next(args)
  }, { step: 'initialize', name: 'recordAbortMultipartUpload' })
  return driver
}, {
  cleanupAttempted: (key) => abortedUploads.includes(prefix + key),
  partBoundary: 8 * 1024 * 1024,
})

t.test('s3: what the conformance run left in the bucket and told the operator', async (t) => {
  const { ListObjectsV2Command, S3Client } = await import('@aws-sdk/client-s3')
  const raw = new S3Client({ region: s3.region, endpoint: s3.endpoint, forcePathStyle: true, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } })
  t.teardown(() => raw.destroy())
  const listed = await raw.send(new ListObjectsV2Command({ Bucket: s3.bucket }))
  t.same(listed.Contents ?? [], [], 'the bucket is empty: every object was written under the prefix and deleted')
  t.ok(abortedUploads.length >= 3, `AbortMultipartUpload was sent for each interrupted multipart put (${abortedUploads.length})`)
  t.ok(abortedUploads.every((key) => key.startsWith(prefix)), 'always under the configured prefix')
  // s3rver answers AbortMultipartUpload with 405: the driver must say so, not fail or stay silent.
  t.equal(warnings.length, abortedUploads.length, 'each failed abort was reported to onWarning')
  t.ok(warnings.every((w) => w.details.status === 405 && typeof w.details.uploadId === 'string'), 'with the status and the upload id')
  t.ok(s3.requests.some((r) => r.method === 'POST' && /uploadId=/.test(r.url) && r.status === 200), 'a multipart upload was completed (large puts really went multipart)')
  t.ok(s3.requests.every((r) => r.status !== 403), 'no request was refused by the signature check')
})

t.test('s3: rateLimitBytesPerSecond holds the upload to the configured rate', async (t) => {
  const { byteSource, drain } = await import('./helpers/byte-source.ts')
  const limited = new S3Driver(
    { bucket: s3.bucket, region: s3.region, endpoint: s3.endpoint, forcePathStyle: true, rateLimitBytesPerSecond: 1024 * 1024 },
    { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
    { allowPrivateEndpoints: true },
  )
  t.teardown(() => limited.close())
  const src = byteSource(1536 * 1024, { chunkSize: 64 * 1024 })
  const started = performance.now()
  await limited.put('rate/limited.bin', src.stream)
  const seconds = (performance.now() - started) / 1000
  t.ok(seconds >= 1.3 && seconds < 5, `1.5 MiB at 1 MiB/s took ${seconds.toFixed(2)} s`)
  t.equal((await drain(await limited.get('rate/limited.bin'))).sha256, src.sha256(), 'bytes intact')
  await limited.delete('rate/limited.bin')
})
