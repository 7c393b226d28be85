import pino, { type Logger } from 'pino'

/**
 * Paths redacted from every agent log line. Destination credentials and database passwords travel inside job.run
 * and discover frames; they must never be written to a log.
 */
export const REDACT_PATHS = [
  'password', '*.password', '*.*.password', '*.*.*.password',
  'credentials', '*.credentials', '*.*.credentials', '*.*.*.credentials',
  'agentCredential', '*.agentCredential', 'token', '*.token',
  'authorization', '*.authorization', 'headers.authorization', '*.headers.authorization',
  'secretAccessKey', '*.secretAccessKey', 'privateKey', '*.privateKey',
]

export function createLogger (options: { level?: string, name?: string } = {}): Logger {
  return pino({
    name: options.name ?? 'cloudpilot-agent',
    level: options.level ?? 'info',
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
  })
}

export type { Logger }
