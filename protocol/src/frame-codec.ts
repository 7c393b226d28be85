import { Compile } from 'typebox/compile'
import type { TSchema } from 'typebox'
import { MAX_FRAME_BYTES } from './version.ts'
import type { ErrorCode } from './errors.ts'
import type { AgentFrame, CoordinatorFrame } from './frames.ts'
import {
  HelloFrame, HeartbeatFrame, JobProgressFrame, JobStatusFrame, DiscoverResultFrame, DestinationTestResultFrame, TransferStatusFrame,
  WelcomeFrame, JobRunFrame, JobCancelFrame, DiscoverFrame, DestinationTestFrame, TransferSendFrame, AckFrame, ErrorFrame,
  BackupDeleteFrame, BackupDeleteResultFrame, AgentUpgradeFrame, AgentUpgradeStatusFrame,
} from './frames.ts'

export type DecodeResult<F> =
  | { ok: true, frame: F }
  | { ok: false, code: Extract<ErrorCode, 'FRAME_INVALID' | 'FRAME_TOO_LARGE' | 'FRAME_UNKNOWN_TYPE'>, message: string, refId?: string }

interface Checker { Check (value: unknown): boolean, Errors (value: unknown): Array<{ instancePath: string, message: string }> }

/**
 * One compiled validator per frame type, compiled on first use and kept: the agent only ever decodes the
 * coordinator's frames (and a process compiles only the types it meets), which keeps start-up and memory small.
 */
class Validators {
  readonly #schemas: Map<string, TSchema>
  readonly #compiled = new Map<string, Checker>()

  constructor (schemas: Record<string, TSchema>) {
    this.#schemas = new Map(Object.entries(schemas))
  }

  get (type: string): Checker | undefined {
    let checker = this.#compiled.get(type)
    if (checker !== undefined) return checker
    const schema = this.#schemas.get(type)
    if (schema === undefined) return undefined
    checker = Compile(schema) as unknown as Checker
    this.#compiled.set(type, checker)
    return checker
  }
}

const AGENT_VALIDATORS = new Validators({
  hello: HelloFrame,
  heartbeat: HeartbeatFrame,
  'job.progress': JobProgressFrame,
  'job.status': JobStatusFrame,
  'discover.result': DiscoverResultFrame,
  'destination.test.result': DestinationTestResultFrame,
  'transfer.status': TransferStatusFrame,
  'backup.delete.result': BackupDeleteResultFrame,
  'agent.upgrade.status': AgentUpgradeStatusFrame,
  ack: AckFrame,
  error: ErrorFrame,
})
const COORDINATOR_VALIDATORS = new Validators({
  welcome: WelcomeFrame,
  'job.run': JobRunFrame,
  'job.cancel': JobCancelFrame,
  discover: DiscoverFrame,
  'destination.test': DestinationTestFrame,
  'transfer.send': TransferSendFrame,
  'backup.delete': BackupDeleteFrame,
  'agent.upgrade': AgentUpgradeFrame,
  ack: AckFrame,
  error: ErrorFrame,
})

function byteLength (data: string | Buffer | ArrayBuffer | Buffer[]): number {
  if (typeof data === 'string') return Buffer.byteLength(data)
  if (Array.isArray(data)) return data.reduce((n, b) => n + b.length, 0)
  return data.byteLength
}

function toText (data: string | Buffer | ArrayBuffer | Buffer[]): string {
  if (typeof data === 'string') return data
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8')
  if (data instanceof ArrayBuffer) return Buffer.from(data).toString('utf8')
  return data.toString('utf8')
}

function decode<F> (validators: Validators, data: string | Buffer | ArrayBuffer | Buffer[]): DecodeResult<F> {
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
  const validator = typeof type === 'string' ? validators.get(type) : undefined
  if (validator === undefined) {
    const shown = typeof type === 'string' ? JSON.stringify(type.slice(0, 64)) : String(type)
    return { ok: false, code: 'FRAME_UNKNOWN_TYPE', message: `unknown frame type ${shown}`, ...(refId === undefined ? {} : { refId }) }
  }
  if (!validator.Check(value)) {
    const first = validator.Errors(value).slice(0, 3).map((e) => `${e.instancePath || '/'} ${e.message}`).join('; ')
    return { ok: false, code: 'FRAME_INVALID', message: `invalid ${String(type)} frame: ${first}`, ...(refId === undefined ? {} : { refId }) }
  }
  return { ok: true, frame: value as F }
}

/** Decode and validate a frame sent by an agent (used by the coordinator). */
export function decodeAgentFrame (data: string | Buffer | ArrayBuffer | Buffer[]): DecodeResult<AgentFrame> {
  return decode<AgentFrame>(AGENT_VALIDATORS, data)
}

/** Decode and validate a frame sent by the coordinator (used by the agent). */
export function decodeCoordinatorFrame (data: string | Buffer | ArrayBuffer | Buffer[]): DecodeResult<CoordinatorFrame> {
  return decode<CoordinatorFrame>(COORDINATOR_VALIDATORS, data)
}

let counter = 0
/** A frame id unique within this process: time-ordered and short. */
export function newFrameId (): string {
  counter = (counter + 1) % 0x100000
  return `${Date.now().toString(36)}-${process.pid.toString(36)}-${counter.toString(36)}`
}

