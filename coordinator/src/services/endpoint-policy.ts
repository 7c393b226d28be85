import { checkEndpointHost } from '@cloudpilot/storage'
import { CloudPilotError, type DestinationType } from '@cloudpilot/protocol'

/** Config fields of each destination type that name a host to connect to. */
const ENDPOINT_FIELDS: Partial<Record<DestinationType, string[]>> = {
  s3: ['endpoint'],
  azure_blob: ['accountUrl'],
  gcs: ['apiEndpoint'],
  google_drive: ['rootUrl', 'tokenUrl'],
  cloudinary: ['apiUrl', 'deliveryUrl'],
  sftp: ['host'],
}

/**
 * SSRF check at create/patch time: an endpoint written as an IP literal (or `localhost`) is checked here so the
 * API refuses it with ENDPOINT_NOT_ALLOWED at once; names are checked again on every connection by the drivers.
 */
export function checkDestinationEndpoints (type: DestinationType, config: Record<string, unknown>, allowPrivate: boolean): void {
  for (const field of ENDPOINT_FIELDS[type] ?? []) {
    const value = config[field]
    if (typeof value !== 'string' || value === '') continue
    let host = value
    if (field !== 'host') {
      try {
        host = new URL(value).hostname
      } catch {
        throw new CloudPilotError('VALIDATION_FAILED', `config.${field} is not a URL: ${JSON.stringify(value)}`)
      }
    }
    if (host === 'localhost' || host.endsWith('.localhost')) host = '127.0.0.1'
    checkEndpointHost(host, allowPrivate)
  }
}
