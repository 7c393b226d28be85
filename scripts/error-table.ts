/** Prints the error registry as the Markdown tables of README.md ("Error codes"). `node scripts/error-table.ts` */
import { ERRORS, type ErrorCode } from '@cloudpilot/protocol'

const groups: Array<[string, ErrorCode[]]> = [
  ['API and authentication', ['UNAUTHORIZED', 'FORBIDDEN', 'NOT_FOUND', 'VALIDATION_FAILED', 'CONFLICT', 'NOT_CANCELLABLE', 'RESOURCE_IN_USE', 'PAYLOAD_TOO_LARGE', 'INTERNAL']],
  ['Enrollment and agents', ['ENROLLMENT_TOKEN_INVALID', 'ENROLLMENT_TOKEN_EXPIRED', 'ENROLLMENT_TOKEN_USED', 'AGENT_CREDENTIAL_INVALID', 'PROTOCOL_MISMATCH', 'AGENT_UNREACHABLE', 'AGENT_TIMEOUT', 'FRAME_INVALID', 'FRAME_TOO_LARGE', 'FRAME_UNKNOWN_TYPE']],
  ['Agent install and upgrade', ['AGENT_PACKAGE_UNAVAILABLE', 'UPGRADE_FAILED']],
  ['Destinations (Test Connection)', ['AUTH_FAILED', 'UNREACHABLE', 'CONTAINER_NOT_FOUND', 'TLS_ERROR', 'DESTINATION_INACTIVE', 'DESTINATION_TYPE_NOT_GRANTED', 'ENDPOINT_NOT_ALLOWED', 'OBJECT_NOT_FOUND']],
  ['Database discovery', ['ACCESS_DENIED', 'CLIENT_MISSING', 'NO_DATABASES']],
  ['Backups', ['SOURCE_UNREACHABLE', 'SOURCE_NOT_FOUND', 'DUMP_FAILED', 'PERMISSION_DENIED', 'NO_SPACE', 'UPLOAD_FAILED', 'VERIFY_FAILED', 'TIMEOUT', 'AGENT_LOST', 'MISSED', 'SKIPPED_OVERLAP', 'ENCRYPTION_UNAVAILABLE', 'BILLING_INACTIVE', 'CANCELLED', 'UNSUPPORTED']],
  ['Restores', ['SOURCE_NOT_COMPLETED', 'TARGET_UNREACHABLE', 'DATABASE_EXISTS', 'INSUFFICIENT_PRIVILEGES', 'DOWNLOAD_FAILED', 'CHECKSUM_MISMATCH', 'UNSAFE_ARCHIVE_ENTRY', 'RESTORE_FAILED', 'TARGET_NOT_EMPTY', 'ARCHIVE_NOT_REACHABLE']],
]

const listed = new Set(groups.flatMap(([, codes]) => codes))
const unlisted = (Object.keys(ERRORS) as ErrorCode[]).filter((c) => !listed.has(c))
if (unlisted.length > 0) groups.push(['Other', unlisted])

const out: string[] = []
for (const [title, codes] of groups) {
  out.push(`**${title}**`, '', '| code | HTTP | meaning | what to do |', '|---|---|---|---|')
  for (const code of codes) {
    const d = ERRORS[code]
    out.push(`| \`${code}\` | ${d.status} | ${d.message.replace(/\|/g, '\\|')} | ${d.hint.replace(/\|/g, '\\|')} |`)
  }
  out.push('')
}
process.stdout.write(out.join('\n'))
