import type { BackupJob, DestinationSpec } from '@cloudpilot/protocol'
import type { SecretBox } from '../crypto/secret-box.ts'
import type { Backup, Destination, Plan } from '../db/schema.ts'

/** The destination as an agent (or the coordinator's own storage calls) needs it: credentials decrypted. */
export function destinationSpec (destination: Destination, secrets: SecretBox, allowPrivateEndpoints = false): DestinationSpec {
  return {
    id: destination.id,
    type: destination.type,
    config: destination.config,
    credentials: destination.credentialsEnc === null ? {} : secrets.openJson<Record<string, unknown>>(destination.credentialsEnc),
    allowPrivateEndpoints,
  }
}

/** A plan's source with its password put back (decrypted) for the agent. */
export function sourceWithSecrets (plan: Plan, secrets: SecretBox): Record<string, unknown> {
  const source = structuredClone(plan.source)
  if (plan.sourceSecretEnc === null) return source
  const secret = secrets.openJson<{ password?: string }>(plan.sourceSecretEnc)
  if (secret.password === undefined) return source
  if (plan.type === 'full') (source.database as Record<string, unknown>).password = secret.password
  else source.password = secret.password
  return source
}

/** The job.run payload for one backup row. Carries decrypted secrets: never log it. */
export function buildBackupJob (backup: Backup, plan: Plan, destination: Destination | null, secrets: SecretBox, objectKey: string, allowPrivateEndpoints: boolean): BackupJob {
  return {
    kind: 'backup',
    jobId: backup.id,
    planId: plan.id,
    serverId: backup.serverId,
    type: plan.type,
    source: sourceWithSecrets(plan, secrets) as BackupJob['source'],
    compression: plan.compression,
    encryption: plan.encryption ?? null,
    keepLocal: plan.keepLocal,
    destination: destination === null ? null : destinationSpec(destination, secrets, allowPrivateEndpoints),
    objectKey,
    timeoutSeconds: plan.timeoutSeconds,
    createdAt: backup.createdAt.toISOString(),
  }
}
