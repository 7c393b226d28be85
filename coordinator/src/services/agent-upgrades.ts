import { eq } from 'drizzle-orm'
import { CloudPilotError, newFrameId, normaliseErrorData, type AgentUpgradeStatusFrame } from '@cloudpilot/protocol'
import type { Db } from '../db/open-database.ts'
import { servers, type Server, type ServerUpgrade } from '../db/schema.ts'
import type { AgentHub } from '../hub/agent-hub.ts'
import type { AgentPackages } from './agent-packages.ts'

export type UpgradeRequestOutcome = 'requested' | 'current'

/**
 * Agent upgrades: the coordinator sends `agent.upgrade` with its package for the server's architecture; the agent
 * downloads, verifies, test-starts and restarts into it (rolled back when it does not come up) and reports through
 * `agent.upgrade.status`; the hello of the new version also settles it. The state is the server row's `upgrade`.
 */
export async function requestUpgrade (deps: { db: Db, hub: AgentHub, packages: AgentPackages }, server: Server): Promise<{ outcome: UpgradeRequestOutcome, server: Server }> {
  if (!deps.hub.isConnected(server.id)) throw new CloudPilotError('AGENT_UNREACHABLE', `server ${server.id} is not connected: it cannot be upgraded now`)
  const target = await deps.packages.fileFor(server.arch ?? '')
  if (target === null) throw new CloudPilotError('AGENT_PACKAGE_UNAVAILABLE', `no agent package for the server's architecture ${server.arch ?? 'unknown'}`)
  if (server.agentVersion === target.version) return { outcome: 'current', server }
  const upgrade: ServerUpgrade = {
    status: 'pending', fromVersion: server.agentVersion, targetVersion: target.version, requestedAt: new Date().toISOString(), finishedAt: null, error: null,
  }
  const [row] = await deps.db.update(servers).set({ upgrade }).where(eq(servers.id, server.id)).returning()
  const sent = deps.hub.send(server.id, {
    type: 'agent.upgrade', id: `upg-${newFrameId()}`, version: target.version, url: `/agent/files/${target.file.name}`, sha256: target.file.sha256, size: target.file.size,
  })
  if (!sent) {
    const failed: ServerUpgrade = { ...upgrade, status: 'failed', finishedAt: new Date().toISOString(), error: new CloudPilotError('AGENT_UNREACHABLE').toData() }
    await deps.db.update(servers).set({ upgrade: failed }).where(eq(servers.id, server.id))
    throw new CloudPilotError('AGENT_UNREACHABLE', `server ${server.id} disconnected before the upgrade could be sent`)
  }
  return { outcome: 'requested', server: row ?? { ...server, upgrade } }
}

/** An agent.upgrade.status frame from the server's agent. */
export async function applyUpgradeStatus (db: Db, serverId: string, frame: AgentUpgradeStatusFrame): Promise<void> {
  const [row] = await db.select({ upgrade: servers.upgrade }).from(servers).where(eq(servers.id, serverId))
  const previous = row?.upgrade ?? null
  const finished = frame.status === 'in_progress' ? null : new Date().toISOString()
  const upgrade: ServerUpgrade = {
    status: frame.status,
    fromVersion: frame.fromVersion,
    targetVersion: frame.toVersion,
    requestedAt: previous?.targetVersion === frame.toVersion ? previous.requestedAt : new Date().toISOString(),
    finishedAt: finished,
    error: frame.status === 'failed'
      ? normaliseErrorData(frame.error ?? new CloudPilotError('UPGRADE_FAILED').toData())
      : null,
  }
  await db.update(servers).set({ upgrade }).where(eq(servers.id, serverId))
}

/** A hello: an agent that now runs the version it was asked to upgrade to has upgraded. */
export async function settleUpgradeOnHello (db: Db, serverId: string, agentVersion: string): Promise<void> {
  const [row] = await db.select({ upgrade: servers.upgrade }).from(servers).where(eq(servers.id, serverId))
  const u = row?.upgrade ?? null
  if (u === null || (u.status !== 'pending' && u.status !== 'in_progress') || u.targetVersion !== agentVersion) return
  await db.update(servers).set({ upgrade: { ...u, status: 'completed', finishedAt: new Date().toISOString(), error: null } }).where(eq(servers.id, serverId))
}
