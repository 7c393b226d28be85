import Type, { type Static } from 'typebox'
import { StringEnum, Uuid, IsoTime } from './schema-helpers.ts'
import { BACKUP_STATUSES, JOB_KINDS, OFFSITE_STATUSES } from './vocabulary.ts'
import { DestinationSpec, JobSpec } from './jobs.ts'
import { DatabaseConnection } from './sources.ts'

/**
 * Every frame of the agent <-> coordinator protocol (DESIGN.md §5), as TypeBox schemas in one union keyed on `type`.
 * `id` is unique per sender and is what `ack` and replies refer to.
 */

const FrameId = Type.String({ minLength: 1, maxLength: 64 })

export const ErrorDataSchema = Type.Object({
  code: Type.String({ minLength: 1, maxLength: 64 }),
  message: Type.String({ maxLength: 4096 }),
  hint: Type.Optional(Type.String({ maxLength: 2048 })),
  retryable: Type.Optional(Type.Boolean()),
})

// ---- agent -> coordinator -------------------------------------------------------------------------------

export const HelloFrame = Type.Object({
  type: Type.Literal('hello'),
  id: FrameId,
  protocolVersion: Type.Integer({ minimum: 1 }),
  agentVersion: Type.String({ maxLength: 64 }),
  hostname: Type.String({ maxLength: 255 }),
  os: Type.String({ maxLength: 255 }),
  arch: Type.String({ maxLength: 32 }),
  /** Tools found on the server: name -> version string. */
  tools: Type.Record(Type.String({ maxLength: 64 }), Type.String({ maxLength: 256 })),
  /** Jobs the agent is still running (after a reconnect). */
  runningJobs: Type.Array(Uuid, { maxItems: 1024 }),
})

export const HeartbeatFrame = Type.Object({
  type: Type.Literal('heartbeat'),
  id: FrameId,
  load: Type.Array(Type.Number(), { maxItems: 3 }),
  memory: Type.Object({ totalBytes: Type.Number(), freeBytes: Type.Number(), agentRssBytes: Type.Number() }),
  spoolFreeBytes: Type.Union([Type.Number(), Type.Null()]),
  runningJobs: Type.Array(Uuid, { maxItems: 1024 }),
})

/** Which kind of job a status or progress frame is about; absent means `backup` (agents before restores). */
const JobKindField = Type.Optional(StringEnum(JOB_KINDS))

export const JobProgressFrame = Type.Object({
  type: Type.Literal('job.progress'),
  id: FrameId,
  jobId: Uuid,
  kind: JobKindField,
  bytes: Type.Number({ minimum: 0 }),
  bytesPerSecond: Type.Number({ minimum: 0 }),
  phase: Type.Optional(Type.String({ maxLength: 64 })),
})

/** Full current state of a job: idempotent, delivered through the agent's outbox until acknowledged. */
export const JobStatusFrame = Type.Object({
  type: Type.Literal('job.status'),
  id: FrameId,
  jobId: Uuid,
  kind: JobKindField,
  status: StringEnum(BACKUP_STATUSES),
  offsiteStatus: Type.Union([StringEnum(OFFSITE_STATUSES), Type.Null()]),
  sizeBytes: Type.Optional(Type.Union([Type.Number({ minimum: 0 }), Type.Null()])),
  sha256: Type.Optional(Type.Union([Type.String({ pattern: '^[0-9a-f]{64}$' }), Type.Null()])),
  localPath: Type.Optional(Type.Union([Type.String({ maxLength: 4096 }), Type.Null()])),
  objectKey: Type.Optional(Type.Union([Type.String({ maxLength: 1024 }), Type.Null()])),
  error: Type.Optional(Type.Union([ErrorDataSchema, Type.Null()])),
  /** When the agent observed this state. */
  at: IsoTime,
  details: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
})

export const DiscoverResultFrame = Type.Object({
  type: Type.Literal('discover.result'),
  id: FrameId,
  requestId: FrameId,
  databases: Type.Optional(Type.Array(Type.Object({ name: Type.String(), system: Type.Boolean() }), { maxItems: 100000 })),
  error: Type.Optional(ErrorDataSchema),
})

/** Result of a destination.test run on the server (Test Connection from the server's point of view). */
export const DestinationTestResultFrame = Type.Object({
  type: Type.Literal('destination.test.result'),
  id: FrameId,
  requestId: FrameId,
  ok: Type.Boolean(),
  latencyMs: Type.Optional(Type.Number({ minimum: 0 })),
  hostKeyFingerprint: Type.Optional(Type.String({ maxLength: 128 })),
  error: Type.Optional(ErrorDataSchema),
})

export const TransferStatusFrame = Type.Object({
  type: Type.Literal('transfer.status'),
  id: FrameId,
  transferId: Uuid,
  error: ErrorDataSchema,
})

/** Outcome of deleting one copy of a backup: done (also when it was already gone), or why not. */
export const DeleteOutcome = Type.Object({
  ok: Type.Boolean(),
  error: Type.Optional(ErrorDataSchema),
})

/** Answer to backup.delete: what happened to each copy the coordinator asked about (null: not asked). */
export const BackupDeleteResultFrame = Type.Object({
  type: Type.Literal('backup.delete.result'),
  id: FrameId,
  /** The id of the backup.delete frame this answers. */
  requestId: FrameId,
  backupId: Uuid,
  localCopy: Type.Union([DeleteOutcome, Type.Null()]),
  object: Type.Union([DeleteOutcome, Type.Null()]),
})

/** Progress and outcome of an agent.upgrade (also sent by the previous version after a rollback). */
export const AgentUpgradeStatusFrame = Type.Object({
  type: Type.Literal('agent.upgrade.status'),
  id: FrameId,
  status: Type.Union([Type.Literal('in_progress'), Type.Literal('completed'), Type.Literal('failed')]),
  fromVersion: Type.String({ maxLength: 64 }),
  toVersion: Type.String({ maxLength: 64 }),
  error: Type.Optional(ErrorDataSchema),
})

// ---- coordinator -> agent -------------------------------------------------------------------------------

export const WelcomeFrame = Type.Object({
  type: Type.Literal('welcome'),
  id: FrameId,
  serverId: Uuid,
  coordinatorVersion: Type.String({ maxLength: 64 }),
  heartbeatIntervalMs: Type.Integer({ minimum: 100 }),
  /** Jobs in the agent's hello that the coordinator no longer wants (already terminal): abort them. */
  cancelJobs: Type.Array(Uuid, { maxItems: 1024 }),
})

export const JobRunFrame = Type.Object({
  type: Type.Literal('job.run'),
  id: FrameId,
  job: JobSpec,
})

export const JobCancelFrame = Type.Object({
  type: Type.Literal('job.cancel'),
  id: FrameId,
  jobId: Uuid,
})

export const DiscoverFrame = Type.Object({
  type: Type.Literal('discover'),
  id: FrameId,
  connection: DatabaseConnection,
})

/**
 * Ask the agent to send a file back (download of a local-destination or spool-only backup): the agent PUTs the
 * bytes to `<coordinator>/agent/transfers/<transferId>` with its credential and this single-use token.
 */
export const TransferSendFrame = Type.Object({
  type: Type.Literal('transfer.send'),
  id: FrameId,
  transferId: Uuid,
  token: Type.String({ minLength: 16, maxLength: 256 }),
  jobId: Uuid,
  localPath: Type.Union([Type.String({ maxLength: 4096 }), Type.Null()]),
  objectKey: Type.Union([Type.String({ maxLength: 1024 }), Type.Null()]),
  destination: Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()]),
})

/** Test a destination from the server (a `local` directory exists only there; endpoints may differ by network). */
export const DestinationTestFrame = Type.Object({
  type: Type.Literal('destination.test'),
  id: FrameId,
  destination: DestinationSpec,
})

/**
 * Retention: delete the copies of an expired backup that only the agent can reach: its spool copy (`localPath`,
 * which must lie in the agent's spool directory) and/or its object in a destination the coordinator cannot
 * reach (a `local` destination: `objectKey` + `destination`). Each with its `.manifest.json`. Deleting what is
 * already gone counts as done. Answered with backup.delete.result.
 */
export const BackupDeleteFrame = Type.Object({
  type: Type.Literal('backup.delete'),
  id: FrameId,
  backupId: Uuid,
  localPath: Type.Union([Type.String({ maxLength: 4096 }), Type.Null()]),
  objectKey: Type.Union([Type.String({ maxLength: 1024 }), Type.Null()]),
  destination: Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()]),
})

/**
 * Upgrade the agent to the coordinator's package: download `url` (relative to the coordinator), check `sha256` and
 * `size`, test-start it, switch to it once no job runs and restart; a version that does not come up is rolled back.
 */
export const AgentUpgradeFrame = Type.Object({
  type: Type.Literal('agent.upgrade'),
  id: FrameId,
  version: Type.String({ minLength: 1, maxLength: 64, pattern: '^[0-9A-Za-z.+-]+$' }),
  url: Type.String({ minLength: 1, maxLength: 2048 }),
  sha256: Type.String({ pattern: '^[0-9a-f]{64}$' }),
  size: Type.Integer({ minimum: 1 }),
})

// ---- both directions ------------------------------------------------------------------------------------

export const AckFrame = Type.Object({
  type: Type.Literal('ack'),
  id: FrameId,
  ackId: FrameId,
  ok: Type.Boolean(),
  error: Type.Optional(ErrorDataSchema),
})

export const ErrorFrame = Type.Object({
  type: Type.Literal('error'),
  id: FrameId,
  /** The frame this error answers, when it could be read. */
  refId: Type.Optional(FrameId),
  code: Type.String({ maxLength: 64 }),
  message: Type.String({ maxLength: 4096 }),
})

export const AgentFrame = Type.Union([
  HelloFrame, HeartbeatFrame, JobProgressFrame, JobStatusFrame, DiscoverResultFrame, DestinationTestResultFrame, TransferStatusFrame,
  BackupDeleteResultFrame, AgentUpgradeStatusFrame, AckFrame, ErrorFrame,
])
export const CoordinatorFrame = Type.Union([
  WelcomeFrame, JobRunFrame, JobCancelFrame, DiscoverFrame, DestinationTestFrame, TransferSendFrame, BackupDeleteFrame, AgentUpgradeFrame, AckFrame, ErrorFrame,
])

export type HelloFrame = Static<typeof HelloFrame>
export type HeartbeatFrame = Static<typeof HeartbeatFrame>
export type JobProgressFrame = Static<typeof JobProgressFrame>
export type JobStatusFrame = Static<typeof JobStatusFrame>
export type DiscoverResultFrame = Static<typeof DiscoverResultFrame>
export type TransferStatusFrame = Static<typeof TransferStatusFrame>
export type DestinationTestFrame = Static<typeof DestinationTestFrame>
export type DestinationTestResultFrame = Static<typeof DestinationTestResultFrame>
export type WelcomeFrame = Static<typeof WelcomeFrame>
export type JobRunFrame = Static<typeof JobRunFrame>
export type JobCancelFrame = Static<typeof JobCancelFrame>
export type DiscoverFrame = Static<typeof DiscoverFrame>
export type TransferSendFrame = Static<typeof TransferSendFrame>
export type BackupDeleteFrame = Static<typeof BackupDeleteFrame>
export type BackupDeleteResultFrame = Static<typeof BackupDeleteResultFrame>
export type DeleteOutcome = Static<typeof DeleteOutcome>
export type AgentUpgradeFrame = Static<typeof AgentUpgradeFrame>
export type AgentUpgradeStatusFrame = Static<typeof AgentUpgradeStatusFrame>
export type AckFrame = Static<typeof AckFrame>
export type ErrorFrame = Static<typeof ErrorFrame>
export type AgentFrame = Static<typeof AgentFrame>
export type CoordinatorFrame = Static<typeof CoordinatorFrame>
export type AgentFrameType = AgentFrame['type']
export type CoordinatorFrameType = CoordinatorFrame['type']

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never
/** A frame as a sender builds it: the id is filled in when sending if absent. */
export type OutgoingCoordinatorFrame = DistributiveOmit<CoordinatorFrame, 'id'> & { id?: string }
export type OutgoingAgentFrame = DistributiveOmit<AgentFrame, 'id'> & { id?: string }
