import {
  CloudPilotError,
  type AzureBlobConfig, type AzureBlobCredentials, type CloudinaryConfig, type CloudinaryCredentials, type GcsConfig,
  type GcsCredentials, type GoogleDriveConfig, type GoogleDriveCredentials, type LocalConfig, type S3Config,
  type S3Credentials, type SftpConfig, type SftpCredentials,
} from '@cloudpilot/protocol'
import type { DestinationInput, OpenOptions, StorageDriver } from './driver.ts'

/**
 * Opens a driver for a destination. Drivers are imported lazily, so an agent that never uses a destination
 * type never loads its SDK (idle memory stays small): s3 loads the AWS SDK, azure_blob the Azure SDK, gcs
 * @google-cloud/storage, sftp ssh2; google_drive and cloudinary use fetch and load no SDK.
 */
export async function openDestination (input: DestinationInput, options: OpenOptions = {}): Promise<StorageDriver> {
  switch (input.type) {
    case 'local': {
      const { LocalDriver } = await import('./local.ts')
      return new LocalDriver(input.config as LocalConfig)
    }
    case 's3': {
      const { S3Driver } = await import('./s3.ts')
      return new S3Driver(input.config as S3Config, input.credentials as S3Credentials, options)
    }
    case 'sftp': {
      const { SftpDriver } = await import('./sftp.ts')
      return new SftpDriver(input.config as SftpConfig, input.credentials as SftpCredentials, options)
    }
    case 'azure_blob': {
      const { AzureBlobDriver } = await import('./azure-blob.ts')
      return new AzureBlobDriver(input.config as AzureBlobConfig, input.credentials as AzureBlobCredentials, options)
    }
    case 'gcs': {
      const { GcsDriver } = await import('./gcs.ts')
      return new GcsDriver(input.config as GcsConfig, input.credentials as GcsCredentials, options)
    }
    case 'google_drive': {
      const { GoogleDriveDriver } = await import('./google-drive.ts')
      return new GoogleDriveDriver(input.config as GoogleDriveConfig, input.credentials as GoogleDriveCredentials, options)
    }
    case 'cloudinary': {
      const { CloudinaryDriver } = await import('./cloudinary.ts')
      return new CloudinaryDriver(input.config as CloudinaryConfig, input.credentials as CloudinaryCredentials, options)
    }
    default:
      throw new CloudPilotError('UNSUPPORTED', `destination type ${String((input as { type?: unknown }).type)} is not supported by this version`)
  }
}
