import { MAX_FRAME_BYTES } from './version.ts'
import type { ErrorCode } from './errors.ts'

export type DecodeResult<F> =
  | { ok: true, frame: F }
  | { ok: false, code: Extract<ErrorCode, 'FRAME_INVALID' | 'FRAME_TOO_LARGE' | 'FRAME_UNKNOWN_TYPE'>, message: string, refId?: string }

export type FrameData = string | Buffer | ArrayBuffer | Buffer[]

/** Validates one frame type; `errors` names what is wrong when `check` fails (may be empty). */
export interface FrameChecker { check (value: unknown): boolean, errors (value: unknown): string[] }

function byteLength (data: FrameData): number {
  if (typeof data === 'string') return Buffer.byteLength(data)
  if (Array.isArray(data)) return data.reduce((n, b) => n + b.length, 0)
  return data.byteLength
}

function toText (data: FrameData): string {
  if (typeof data === 'string') return data
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8')
  if (data instanceof ArrayBuffer) return Buffer.from(data).toString('utf8')
  return data.toString('utf8')
}

/** Size, JSON and type checks shared by both directions; `checkerFor` validates the frame of each known type. */
export function decodeFrame<F> (checkerFor: (type: string) => FrameChecker | undefined, data: FrameData): DecodeResult<F> {
  if (byteLength(data) > MAX_FRAME_BYTES) {
    return { ok: false, code: 'FRAME_TOO_LARGE', message: `frame of ${byteLength(data)} bytes exceeds ${MAX_FRAME_BYTES}` }
  }
  let value: unknown
  try {
    value = JSON.parse(toText(data))
  } catch {
    return { ok: false, code: 'FRAME_INVALID', message: 'frame is not valid JSON' }
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { ok: false, code: 'FRAME_INVALID', message: 'frame must be a JSON object' }
  }
  const { type, id } = value as { type?: unknown, id?: unknown }
  const refId = typeof id === 'string' && id.length <= 64 ? id : undefined
  const checker = typeof type === 'string' ? checkerFor(type) : undefined
  if (checker === undefined) {
    const shown = typeof type === 'string' ? JSON.stringify(type.slice(0, 64)) : String(type)
    return { ok: false, code: 'FRAME_UNKNOWN_TYPE', message: `unknown frame type ${shown}`, ...(refId === undefined ? {} : { refId }) }
  }
  if (!checker.check(value)) {
    const first = checker.errors(value).slice(0, 3).join('; ')
    return { ok: false, code: 'FRAME_INVALID', message: `invalid ${String(type)} frame${first === '' ? '' : `: ${first}`}`, ...(refId === undefined ? {} : { refId }) }
  }
  return { ok: true, frame: value as F }
}

let counter = 0
/** A frame id unique within this process: time-ordered and short. */
export function newFrameId (): string {
  counter = (counter + 1) % 0x100000
  return `${Date.now().toString(36)}-${process.pid.toString(36)}-${counter.toString(36)}`
}
