import { eq } from 'drizzle-orm'
import { CloudPilotError, isTerminal, normaliseErrorData, type AgentFrame, type HelloFrame } from '@cloudpilot/protocol'
import type { Db } from '../db/open-database.ts'
import { servers } from '../db/schema.ts'
import type { BackupRecords } from '../services/backup-records.ts'
import type { Dispatcher } from '../services/dispatcher.ts'
import type { RestoreRecords } from '../services/restore-records.ts'
import type { RestoreService } from '../services/restores.ts'
import type { Transfers } from '../services/transfers.ts'
import type { AgentFrameHandlers } from './agent-hub.ts'
import type { AgentSession } from './agent-session.ts'
import type { DiscoveryRequests } from '../services/discovery-requests.ts'
import type { AgentRequests } from '../services/agent-requests.ts'
import type { RetentionSweeper } from '../services/retention-sweeper.ts'
import type { ReplicaRegistry } from '../services/replica-registry.ts'
import type { Logger } from 'pino'
import { applyUpgradeStatus, settleUpgradeOnHello } from '../services/agent-upgrades.ts'

const PROGRESS_EVERY_MS = 1000

/** What the coordinator does with each agent frame. */
export function createFrameRouter (deps: {
  db: Db
  records: BackupRecords
  restores: RestoreRecords
  dispatcher: () => Dispatcher
  restoreService: () => RestoreService
  transfers: Transfers
  discovery: DiscoveryRequests
  requests: AgentRequests
  retention?: () => RetentionSweeper
  /** Records which replica holds each agent, so that other replicas can forward commands to it. */
  registry?: ReplicaRegistry
  log?: Logger
}): AgentFrameHandlers {
  const lastProgress = new Map<string, number>()

  async function onHello (session: AgentSession, hello: HelloFrame): Promise<{ cancelJobs: string[] }> {
    deps.registry?.cancelRelease(session.serverId)
    await deps.db.update(servers).set({
      hostname: hello.hostname,
      os: hello.os,
      arch: hello.arch,
      agentVersion: hello.agentVersion,
      protocolVersion: hello.protocolVersion,
      tools: hello.tools,
      status: 'online',
      lastSeenAt: new Date(),
      ...(deps.registry === undefined ? {} : { connectedReplica: deps.registry.id }),
    }).where(eq(servers.id, session.serverId))
    await settleUpgradeOnHello(deps.db, session.serverId, hello.agentVersion)
    // A running job is kept when either table knows it as running: abort only what both say to abort.
    const backupsSay = new Set(await deps.records.jobsToAbort(session.serverId, hello.runningJobs))
    const restoresSay = await deps.restores.jobsToAbort(session.serverId, hello.runningJobs)
    return { cancelJobs: restoresSay.filter((id) => backupsSay.has(id)) }
  }

  async function onFrame (session: AgentSession, frame: Exclude<AgentFrame, HelloFrame>): Promise<void> {
    switch (frame.type) {
      case 'heartbeat':
        session.health = { load: frame.load, memory: frame.memory, spoolFreeBytes: frame.spoolFreeBytes, at: new Date().toISOString() }
        session.runningJobs = frame.runningJobs
        return
      case 'job.status': {
        // A database error throws here: no ack, so the agent's outbox sends the report again.
        const outcome = frame.kind === 'restore'
          ? await deps.restores.applyJobStatus(session.serverId, frame)
          : await deps.records.applyJobStatus(session.serverId, frame)
        if (outcome === 'applied' && isTerminal(frame.status)) lastProgress.delete(frame.jobId)
        if (outcome === 'unknown-job') {
          session.send({ type: 'ack', ackId: frame.id, ok: false, error: new CloudPilotError('NOT_FOUND', `no job ${frame.jobId} for this server`).toData() })
        } else {
          session.send({ type: 'ack', ackId: frame.id, ok: true })
        }
        return
      }
      case 'job.progress': {
        const now = Date.now()
        if (now - (lastProgress.get(frame.jobId) ?? 0) < PROGRESS_EVERY_MS) return
        lastProgress.set(frame.jobId, now)
        const progress: { bytes: number, bytesPerSecond: number, phase?: string } = { bytes: frame.bytes, bytesPerSecond: frame.bytesPerSecond }
        if (frame.phase !== undefined) progress.phase = frame.phase
        if (frame.kind === 'restore') await deps.restores.updateProgress(session.serverId, frame.jobId, progress)
        else await deps.records.updateProgress(session.serverId, frame.jobId, progress)
        return
      }
      case 'ack':
        // The agent refused a job.run (e.g. a type it does not support): the row fails with its reason.
        if (!frame.ok && frame.ackId.startsWith('run-')) {
          const jobId = frame.ackId.slice(4)
          const row = await deps.records.get(jobId)
          if (row?.serverId === session.serverId) {
            await deps.records.failIfOpen(jobId, frame.error === undefined ? new CloudPilotError('INTERNAL', 'the agent refused the job').toData() : normaliseErrorData(frame.error))
          }
        }
        if (!frame.ok && frame.ackId.startsWith('restore-')) {
          const jobId = frame.ackId.slice('restore-'.length)
          const row = await deps.restores.get(jobId)
          if (row?.targetServerId === session.serverId) {
            await deps.restores.failIfOpen(jobId, frame.error === undefined ? new CloudPilotError('INTERNAL', 'the agent refused the restore').toData() : normaliseErrorData(frame.error))
          }
        }
        return
      case 'discover.result':
        deps.discovery.settle(session.serverId, frame)
        return
      case 'destination.test.result':
        deps.requests.settle(session.serverId, frame.requestId, frame)
        return
      case 'backup.delete.result':
        await deps.retention?.().applyAgentResult(session.serverId, frame)
        return
      case 'agent.upgrade.status':
        session.log.info({ status: frame.status, fromVersion: frame.fromVersion, toVersion: frame.toVersion, error: frame.error?.message }, 'agent upgrade')
        await applyUpgradeStatus(deps.db, session.serverId, frame)
        return
      case 'transfer.status':
        deps.transfers.fail(frame.transferId, session.serverId, normaliseErrorData(frame.error))
        return
      case 'error':
        session.log.warn({ code: frame.code, refId: frame.refId, reason: frame.message }, 'agent reported a protocol error')
        // An agent that cannot take a backup.delete (e.g. an older version): say so on the deletion, not only in the log.
        if (frame.refId?.startsWith('del-') === true) await deps.retention?.().agentRefused(session.serverId, frame.refId.slice(4), `${frame.code}: ${frame.message}`)
        // An agent that cannot read a restore job (an older version) refuses the frame: fail the restore now
        // rather than leaving it pending until MISSED.
        if (frame.refId?.startsWith('restore-') === true) {
          const jobId = frame.refId.slice('restore-'.length)
          const row = await deps.restores.get(jobId).catch(() => undefined)
          if (row?.targetServerId === session.serverId) {
            await deps.restores.failIfOpen(jobId, new CloudPilotError('UNSUPPORTED', `the target server's agent refused the restore job (${frame.code}: ${frame.message.slice(0, 500)})`, { hint: 'Upgrade the agent on the target server to the coordinator\'s version.' }).toData())
          }
        }
        return
    }
  }

  return {
    onHello,
    afterWelcome: async (session, hello) => {
      await deps.dispatcher().redispatch(session.serverId, hello.runningJobs)
      await deps.restoreService().redispatch(session.serverId, hello.runningJobs)
    },
    onFrame,
    onDisconnect: (session) => {
      deps.registry?.release(session.serverId).catch((err: unknown) => deps.log?.warn({ err, serverId: session.serverId }, 'could not record the agent\'s disconnection'))
    },
  }
}
