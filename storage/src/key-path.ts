import { CloudPilotError } from '@cloudpilot/protocol'

/**
 * Validates a relative object key and joins it under an optional prefix. Keys never contain `..` segments,
 * empty segments, backslashes or NUL, so no driver can be steered outside its root or prefix.
 */
export function checkKey (key: string): string {
  if (key.length === 0 || key.length > 1024) throw new CloudPilotError('VALIDATION_FAILED', 'object key must be 1..1024 characters')
  if (key.includes('\0') || key.includes('\\')) throw new CloudPilotError('VALIDATION_FAILED', 'object key contains a forbidden character')
  const parts = key.split('/')
  for (const part of parts) {
    if (part === '' || part === '.' || part === '..') throw new CloudPilotError('VALIDATION_FAILED', `object key has an invalid segment: ${JSON.stringify(key)}`)
  }
  return key
}

/** Prefix as configured (`a/b`, `/a/b/`, '') normalised to '' or 'a/b/'. */
export function normalisePrefix (prefix: string | undefined): string {
  const trimmed = (prefix ?? '').replace(/^\/+|\/+$/g, '')
  if (trimmed === '') return ''
  checkKey(trimmed)
  return trimmed + '/'
}
