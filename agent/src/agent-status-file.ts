import { readFile, rename, writeFile } from 'node:fs/promises'
import path from 'node:path'

/** What `cloudpilot-agent status` shows: written by the running agent to <stateDir>/status.json. */
export interface AgentStatus {
  pid: number
  serverId: string
  coordinatorUrl: string
  connected: boolean
  lastConnectedAt: string | null
  runningJobs: string[]
  outboxPending: number
  agentVersion: string
  updatedAt: string
}

export function statusFile (stateDir: string): string {
  return path.join(stateDir, 'status.json')
}

export async function writeStatus (stateDir: string, status: AgentStatus): Promise<void> {
  const file = statusFile(stateDir)
  const tmp = `${file}.tmp`
  await writeFile(tmp, JSON.stringify(status, null, 2) + '\n', { mode: 0o640 })
  await rename(tmp, file)
}

export async function readStatus (stateDir: string): Promise<AgentStatus | null> {
  try {
    return JSON.parse(await readFile(statusFile(stateDir), 'utf8')) as AgentStatus
  } catch {
    return null
  }
}
