import { realpath, rm } from 'node:fs/promises'
import path from 'node:path'
import {
  CloudPilotError, manifestKey, toErrorData, type BackupDeleteFrame, type DeleteOutcome, type DestinationType,
} from '@cloudpilot/protocol'
import { openDestination } from '@cloudpilot/storage'

/**
 * Retention on the server: deletes the copies of an expired backup that only the agent can reach (its spool copy,
 * its object in a `local` destination), each with its `.manifest.json`. Deny by default: the spool copy must be a
 * file of this agent's spool directory named for the backup, and the object key must be one of this server's
 * keys for that backup, so the coordinator cannot make the agent delete anything else. A copy already gone counts
 * as deleted.
 */
export async function deleteBackupCopies (frame: BackupDeleteFrame, options: { spoolDir: string, serverId: string | null }): Promise<{ localCopy: DeleteOutcome | null, object: DeleteOutcome | null }> {
  return {
    localCopy: frame.localPath === null ? null : await outcome(() => deleteSpoolCopy(frame.localPath as string, frame.backupId, options.spoolDir)),
    object: frame.objectKey === null ? null : await outcome(() => deleteObject(frame, options.serverId)),
  }
}

async function outcome (work: () => Promise<void>): Promise<DeleteOutcome> {
  try {
    await work()
    return { ok: true }
  } catch (err) {
    return { ok: false, error: toErrorData(err) }
  }
}

async function deleteSpoolCopy (localPath: string, backupId: string, spoolDir: string): Promise<void> {
  const root = await realpath(spoolDir).catch(() => path.resolve(spoolDir))
  const resolved = path.resolve(localPath)
  // The file may be gone already; its directory must still be the spool directory itself.
  const dir = await realpath(path.dirname(resolved)).catch(() => path.dirname(resolved))
  if (dir !== root || !path.basename(resolved).startsWith(backupId)) {
    throw new CloudPilotError('FORBIDDEN', `${localPath} is not a spool copy of backup ${backupId} in this agent's spool directory`)
  }
  const file = path.join(root, path.basename(resolved))
  await rm(`${file}.manifest.json`, { force: true })
  await rm(file, { force: true })
}

async function deleteObject (frame: BackupDeleteFrame, serverId: string | null): Promise<void> {
  const key = frame.objectKey as string
  if (frame.destination === null) throw new CloudPilotError('VALIDATION_FAILED', 'backup.delete names an object but no destination')
  if ((serverId !== null && !key.startsWith(`${serverId}/`)) || !key.includes(frame.backupId)) {
    throw new CloudPilotError('FORBIDDEN', `object ${key} is not one of this server's keys for backup ${frame.backupId}`)
  }
  const d = frame.destination as { type: DestinationType, config: Record<string, unknown>, credentials?: Record<string, unknown>, allowPrivateEndpoints?: boolean }
  const driver = await openDestination({ type: d.type, config: d.config, credentials: d.credentials ?? {} }, { allowPrivateEndpoints: d.allowPrivateEndpoints === true })
  try {
    await driver.delete(manifestKey(key))
    await driver.delete(key)
  } finally {
    await driver.close().catch(() => {})
  }
}
