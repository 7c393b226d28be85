import { CloudPilotError } from '@cloudpilot/protocol'

/** Keyset pagination cursor over (createdAt desc, id desc): opaque base64url of `<iso>|<id>`. */
export function encodeCursor (at: Date, id: string): string {
  return Buffer.from(`${at.toISOString()}|${id}`).toString('base64url')
}

export function decodeCursor (cursor: string | undefined): { at: Date, id: string } | null {
  if (cursor === undefined || cursor === '') return null
  const [at, id] = Buffer.from(cursor, 'base64url').toString('utf8').split('|')
  const date = at === undefined ? new Date(NaN) : new Date(at)
  if (id === undefined || Number.isNaN(date.getTime()) || !/^[0-9a-f-]{36}$/.test(id)) throw new CloudPilotError('VALIDATION_FAILED', 'invalid cursor')
  return { at: date, id }
}
