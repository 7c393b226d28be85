import pino, { type Logger } from 'pino'

/** Credential-bearing paths are redacted from every log line (request headers, bodies, frames). */
export const REDACT_PATHS = [
  'req.headers.authorization', 'headers.authorization', 'authorization',
  'password', '*.password', '*.*.password', '*.*.*.password',
  'credentials', '*.credentials', '*.*.credentials', '*.*.*.credentials',
  'token', '*.token', 'agentCredential', '*.agentCredential',
  'secretAccessKey', '*.secretAccessKey', 'privateKey', '*.privateKey',
]

export function createLogger (level: string): Logger {
  return pino({ name: 'cloudpilot-coordinator', level, redact: { paths: REDACT_PATHS, censor: '[redacted]' } })
}

export type { Logger }
