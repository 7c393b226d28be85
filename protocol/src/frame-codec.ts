import { Compile } from 'typebox/compile'
import type { TSchema } from 'typebox'
import type { AgentFrame } from './frames.ts'
import {
  HelloFrame, HeartbeatFrame, JobProgressFrame, JobStatusFrame, DiscoverResultFrame, DestinationTestResultFrame, TransferStatusFrame,
  WelcomeFrame, JobRunFrame, JobCancelFrame, DiscoverFrame, DestinationTestFrame, TransferSendFrame, AckFrame, ErrorFrame,
  BackupDeleteFrame, BackupDeleteResultFrame, AgentUpgradeFrame, AgentUpgradeStatusFrame,
} from './frames.ts'
import { decodeFrame, type DecodeResult, type FrameChecker, type FrameData } from './frame-decode.ts'

/**
 * One compiled validator per frame type, compiled on first use and kept: a process compiles only the types it
 * meets, which keeps start-up and memory small.
 */
class Validators {
  readonly #schemas: Map<string, TSchema>
  readonly #compiled = new Map<string, FrameChecker>()

  constructor (schemas: Record<string, TSchema>) {
    this.#schemas = new Map(Object.entries(schemas))
  }

  get (type: string): FrameChecker | undefined {
    let checker = this.#compiled.get(type)
    if (checker !== undefined) return checker
    const schema = this.#schemas.get(type)
    if (schema === undefined) return undefined
    const validator = Compile(schema)
    checker = {
      check: (value) => validator.Check(value),
      errors: (value) => validator.Errors(value).map((e) => `${e.instancePath || '/'} ${e.message}`),
    }
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

/**
 * The frames the coordinator sends, by type. The agent checks them with the functions generated from these
 * schemas (coordinator-frame-checks.generated.ts), so that it does not load TypeBox.
 */
export const COORDINATOR_FRAME_SCHEMAS: Record<string, TSchema> = {
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
}

/** Decode and validate a frame sent by an agent (used by the coordinator). */
export function decodeAgentFrame (data: FrameData): DecodeResult<AgentFrame> {
  return decodeFrame<AgentFrame>((type) => AGENT_VALIDATORS.get(type), data)
}
