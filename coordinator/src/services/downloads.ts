import type { Readable } from 'node:stream'
import { eq } from 'drizzle-orm'
import { CloudPilotError, toErrorData } from '@cloudpilot/protocol'
import { openDestination } from '@cloudpilot/storage'
import type { CoordinatorContext } from '../context.ts'
import { destinations, type Backup } from '../db/schema.ts'
import { destinationSpec } from './job-builder.ts'

/**
 * The bytes of a completed backup, as they were made. From the destination when the coordinator can reach it;
 * otherwise (a `local` destination, or only the spool copy) the agent sends the file over a one-off transfer.
 */
export async function openBackupDownload (ctx: CoordinatorContext, row: Backup, signal: AbortSignal): Promise<Readable> {
  if (row.status !== 'completed') throw new CloudPilotError('SOURCE_NOT_COMPLETED', `backup is ${row.status}`, { hint: 'Only completed backups can be downloaded or restored.' })
  if (row.deletion != null) {
    throw new CloudPilotError('OBJECT_NOT_FOUND', row.expiredAt !== null
      ? `the backup was deleted by retention at ${row.expiredAt.toISOString()}`
      : `the backup is being deleted by retention (selected at ${row.deletion.requestedAt})`)
  }
  const [destination] = row.destinationId === null ? [] : await ctx.db.select().from(destinations).where(eq(destinations.id, row.destinationId))
  if (destination !== undefined && destination.type !== 'local' && row.objectKey !== null) {
    try {
      const driver = await openDestination(destinationSpec(destination, ctx.secrets), { allowPrivateEndpoints: ctx.config.allowPrivateEndpoints })
      const stream = await driver.get(row.objectKey, { signal })
      stream.once('close', () => { driver.close().catch(() => {}) })
      return stream
    } catch (err) {
      const data = toErrorData(err, 'DOWNLOAD_FAILED')
      throw new CloudPilotError('DOWNLOAD_FAILED', `reading ${row.objectKey} from destination "${destination.name}": ${data.code}: ${data.message}`)
    }
  }
  const localPath = destination?.type === 'local' ? null : row.localPath
  if (localPath === null && (destination === undefined || row.objectKey === null)) {
    throw new CloudPilotError('DOWNLOAD_FAILED', 'the backup has neither an object nor a local copy recorded')
  }
  return await ctx.transfers.request(row.serverId, (transferId, token) => ctx.hub.send(row.serverId, {
    type: 'transfer.send',
    transferId,
    token,
    jobId: row.id,
    localPath,
    objectKey: localPath === null ? row.objectKey : null,
    destination: localPath === null && destination !== undefined ? destinationSpec(destination, ctx.secrets, ctx.config.allowPrivateEndpoints) : null,
  }))
}
