/**
 * The S3 error mapping for answers s3rver cannot produce (permission, region, quota errors of real S3 and
 * S3-compatibles; DNS and certificate failures), with errors shaped as the SDK shapes them: `name` is the S3 error
 * code, `$metadata.httpStatusCode` the status; network errors carry Node's `code`.
 */
import t from 'tap'
import { CloudPilotError, ERRORS } from '@cloudpilot/protocol'
import { mapS3Error, type S3ErrorContext } from '../src/s3-error-map.ts'

const SECRET = 'AbCdEf0123456789SecretKeyValue/+xyz'
const ctx: S3ErrorContext = { op: 'put', bucket: 'b', objectKey: 'p/k.gz', host: 's3.example.net', secrets: [SECRET] }

function sdkError (name: string, status: number | undefined, message = `${name} happened`): Error {
  const err = new Error(message)
  err.name = name
  if (status !== undefined) Object.assign(err, { $metadata: { httpStatusCode: status, attempts: 1 } })
  return err
}
function nodeError (code: string, message = `connect ${code}`): Error {
  return Object.assign(new Error(message), { code })
}

const cases: Array<[string, Error, Partial<S3ErrorContext>, string, RegExp | undefined]> = [
  ['InvalidAccessKeyId', sdkError('InvalidAccessKeyId', 403), {}, 'AUTH_FAILED', /trailing spaces/],
  ['SignatureDoesNotMatch', sdkError('SignatureDoesNotMatch', 403), {}, 'AUTH_FAILED', /trailing spaces/],
  ['ExpiredToken', sdkError('ExpiredToken', 400), {}, 'AUTH_FAILED', undefined],
  ['AccessDenied', sdkError('AccessDenied', 403), {}, 'AUTH_FAILED', /s3:PutObject/],
  ['HEAD 403 without a body', sdkError('Unknown', 403, 'Unknown'), { op: 'stat' }, 'AUTH_FAILED', /trailing spaces.*s3:PutObject/s],
  ['NoSuchBucket', sdkError('NoSuchBucket', 404), {}, 'CONTAINER_NOT_FOUND', /Create the bucket/],
  ['list 404 without code', sdkError('NotFound', 404), { op: 'list' }, 'CONTAINER_NOT_FOUND', undefined],
  ['PermanentRedirect', sdkError('PermanentRedirect', 301), {}, 'CONTAINER_NOT_FOUND', /region/],
  ['AuthorizationHeaderMalformed (wrong region)', sdkError('AuthorizationHeaderMalformed', 400), {}, 'CONTAINER_NOT_FOUND', /region/],
  ['NoSuchKey', sdkError('NoSuchKey', 404), { op: 'get' }, 'OBJECT_NOT_FOUND', undefined],
  ['get 404 without code', sdkError('NotFound', 404), { op: 'get' }, 'OBJECT_NOT_FOUND', undefined],
  ['MinIO storage full', sdkError('XMinioStorageFull', 507), {}, 'NO_SPACE', undefined],
  ['Ceph quota', sdkError('QuotaExceeded', 403), {}, 'NO_SPACE', undefined],
  ['InternalError', sdkError('InternalError', 500), {}, 'UPLOAD_FAILED', undefined],
  ['EntityTooLarge', sdkError('EntityTooLarge', 400), {}, 'UPLOAD_FAILED', undefined],
  ['ECONNREFUSED', nodeError('ECONNREFUSED'), {}, 'UNREACHABLE', /firewalls/],
  ['DNS ENOTFOUND', nodeError('ENOTFOUND', 'getaddrinfo ENOTFOUND s3.example.net'), {}, 'UNREACHABLE', undefined],
  ['DNS EAI_AGAIN', nodeError('EAI_AGAIN'), {}, 'UNREACHABLE', undefined],
  ['connect timeout', sdkError('TimeoutError', undefined, 'the request socket did not establish a connection with the server within the configured timeout of 10000 ms.'), {}, 'UNREACHABLE', undefined],
  ['expired certificate', nodeError('CERT_HAS_EXPIRED', 'certificate has expired'), {}, 'TLS_ERROR', /certificate/],
  ['self-signed', nodeError('DEPTH_ZERO_SELF_SIGNED_CERT', 'self-signed certificate'), {}, 'TLS_ERROR', undefined],
  ['host name mismatch', nodeError('ERR_TLS_CERT_ALTNAME_INVALID', 'Hostname/IP does not match certificate\'s altnames'), {}, 'TLS_ERROR', undefined],
  ['anything else', new Error('something odd'), {}, 'UPLOAD_FAILED', undefined],
]

for (const [label, err, extra, code, hint] of cases) {
  t.test(label, async (t) => {
    const mapped = mapS3Error(err, { ...ctx, ...extra })
    t.ok(mapped instanceof CloudPilotError, 'a CloudPilotError')
    t.equal((mapped as CloudPilotError).code, code, code)
    t.equal((mapped as CloudPilotError).cause, err, 'the SDK error is kept as cause')
    if (hint !== undefined) t.match((mapped as CloudPilotError).hint, hint, 'hint')
    t.ok((mapped as CloudPilotError).hint.length > 10, 'has a hint')
  })
}

t.test('AbortError passes through; an own CloudPilotError (from the endpoint guard) keeps its code', async (t) => {
  const abort = Object.assign(new Error('Request aborted'), { name: 'AbortError' })
  t.equal(mapS3Error(abort, ctx), abort)
  const own = new CloudPilotError('ENDPOINT_NOT_ALLOWED', 'refused')
  t.equal(mapS3Error(Object.assign(new Error('wrapped'), { cause: own }), ctx), own)
})

t.test('the secret never reaches a message, even when a server echoes it', async (t) => {
  const mapped = mapS3Error(sdkError('InvalidArgument', 400, `bad header value ${SECRET}`), ctx) as CloudPilotError
  t.notMatch(mapped.message, SECRET)
  t.match(mapped.message, /\[redacted\]/)
  t.equal(mapped.code, 'UPLOAD_FAILED')
  t.equal(ERRORS[mapped.code].status, 502)
})
