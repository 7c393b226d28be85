/**
 * The S3 emulator of the tests (s3rver behind a SigV4-verifying front) in a process of its own, so that its
 * CPU and memory are neither the agent's nor the benchmark's. Prints one JSON line with the endpoint, then
 * serves until SIGTERM.
 */
import { startS3rver } from '../../storage/test/helpers/s3rver.ts'

const s3 = await startS3rver()
process.stdout.write(JSON.stringify({ endpoint: s3.endpoint, bucket: s3.bucket, region: s3.region, accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey, directory: s3.directory }) + '\n')
process.once('SIGTERM', () => { s3.close().finally(() => process.exit(0)) })
