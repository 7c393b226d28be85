import { CloudPilotError, type S3Config } from '@cloudpilot/protocol'

/**
 * S3-compatible providers as presets of the `s3` destination type: what a user picks in a form (provider,
 * region or account) becomes the `endpoint`, `region` and `forcePathStyle` of an ordinary s3 config. The API can
 * list them (`S3_PRESETS`) and build a config from one (`s3ConfigFromPreset`).
 *
 * Endpoints as each provider documents them:
 * - DigitalOcean Spaces: https://<region>.digitaloceanspaces.com (docs.digitalocean.com/products/spaces/reference/s3-compatibility/)
 * - Cloudflare R2: https://<account id>.r2.cloudflarestorage.com, region "auto"; EU jurisdiction buckets at
 *   https://<account id>.eu.r2.cloudflarestorage.com (developers.cloudflare.com/r2/api/s3/api/)
 * - Wasabi: https://s3.<region>.wasabisys.com (docs.wasabi.com, "Service URLs for Wasabi's storage regions")
 * - MinIO: the server's own URL (self-hosted), path-style addressing, region us-east-1 unless configured.
 */

export type S3PresetId = 'digitalocean_spaces' | 'cloudflare_r2' | 'wasabi' | 'minio'

export interface S3Preset {
  id: S3PresetId
  name: string
  /** With {region}, {accountId} or {endpoint} placeholders. */
  endpointTemplate: string
  /** What the user must give. */
  needs: ReadonlyArray<'region' | 'accountId' | 'endpoint'>
  /** The S3 `region` to sign with: fixed, or the region the user gave. */
  signingRegion: string | 'from-input'
  forcePathStyle: boolean
  /** Known regions (suggestions for a form; others are accepted). */
  regions: readonly string[]
  /** Optional variants, e.g. R2 jurisdictions. */
  jurisdictions?: readonly string[]
  docs: string
}

export const S3_PRESETS: readonly S3Preset[] = [
  {
    id: 'digitalocean_spaces',
    name: 'DigitalOcean Spaces',
    endpointTemplate: 'https://{region}.digitaloceanspaces.com',
    needs: ['region'],
    signingRegion: 'from-input',
    forcePathStyle: false,
    regions: ['nyc3', 'sfo2', 'sfo3', 'ams3', 'fra1', 'lon1', 'sgp1', 'syd1', 'blr1', 'tor1', 'atl1'],
    docs: 'https://docs.digitalocean.com/products/spaces/reference/s3-compatibility/',
  },
  {
    id: 'cloudflare_r2',
    name: 'Cloudflare R2',
    endpointTemplate: 'https://{accountId}.r2.cloudflarestorage.com',
    needs: ['accountId'],
    signingRegion: 'auto',
    forcePathStyle: true,
    regions: ['auto'],
    jurisdictions: ['eu', 'fedramp'],
    docs: 'https://developers.cloudflare.com/r2/api/s3/api/',
  },
  {
    id: 'wasabi',
    name: 'Wasabi',
    endpointTemplate: 'https://s3.{region}.wasabisys.com',
    needs: ['region'],
    signingRegion: 'from-input',
    forcePathStyle: false,
    regions: ['us-east-1', 'us-east-2', 'us-central-1', 'us-west-1', 'us-west-2', 'ca-central-1', 'eu-central-1', 'eu-central-2', 'eu-west-1', 'eu-west-2', 'eu-west-3', 'eu-south-1', 'ap-northeast-1', 'ap-northeast-2', 'ap-southeast-1', 'ap-southeast-2'],
    docs: 'https://docs.wasabi.com/docs/what-are-the-service-urls-for-wasabi-s-different-storage-regions',
  },
  {
    id: 'minio',
    name: 'MinIO (self-hosted)',
    endpointTemplate: '{endpoint}',
    needs: ['endpoint'],
    signingRegion: 'us-east-1',
    forcePathStyle: true,
    regions: ['us-east-1'],
    docs: 'https://min.io/docs/minio/linux/developers/javascript/minio-javascript.html',
  },
]

export interface PresetInput {
  region?: string
  accountId?: string
  /** R2 only: 'eu' or 'fedramp' for buckets created in a jurisdiction. */
  jurisdiction?: string
  /** MinIO only: the server's URL. */
  endpoint?: string
}

/** The s3 config fields a preset stands for (bucket, prefix and credentials come from the user as usual). */
export function s3ConfigFromPreset (id: S3PresetId, input: PresetInput): Pick<S3Config, 'endpoint' | 'region' | 'forcePathStyle'> {
  const preset = S3_PRESETS.find((p) => p.id === id)
  if (preset === undefined) throw new CloudPilotError('VALIDATION_FAILED', `unknown S3 preset ${String(id)}; known: ${S3_PRESETS.map((p) => p.id).join(', ')}`)
  const region = (input.region ?? '').trim().toLowerCase()
  if (preset.needs.includes('region') && !/^[a-z]{2,}[a-z0-9-]*[0-9]$/.test(region)) throw new CloudPilotError('VALIDATION_FAILED', `${preset.name} needs a region such as ${preset.regions.slice(0, 3).join(', ')}`)
  let endpoint: string
  switch (id) {
    case 'cloudflare_r2': {
      const accountId = (input.accountId ?? '').trim().toLowerCase()
      if (!/^[0-9a-f]{32}$/.test(accountId)) throw new CloudPilotError('VALIDATION_FAILED', 'Cloudflare R2 needs the account id (32 hex characters, in the dashboard\'s R2 overview)')
      const jurisdiction = (input.jurisdiction ?? '').trim().toLowerCase()
      if (jurisdiction !== '' && preset.jurisdictions?.includes(jurisdiction) !== true) throw new CloudPilotError('VALIDATION_FAILED', `Cloudflare R2 jurisdiction must be one of ${preset.jurisdictions?.join(', ') ?? ''}`)
      endpoint = jurisdiction === '' ? `https://${accountId}.r2.cloudflarestorage.com` : `https://${accountId}.${jurisdiction}.r2.cloudflarestorage.com`
      break
    }
    case 'minio': {
      const raw = (input.endpoint ?? '').trim()
      let url: URL
      try {
        url = new URL(raw)
      } catch {
        throw new CloudPilotError('VALIDATION_FAILED', 'MinIO needs the server\'s URL, e.g. https://minio.example.com:9000')
      }
      if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new CloudPilotError('VALIDATION_FAILED', 'MinIO endpoint must be an http(s) URL')
      endpoint = url.origin
      break
    }
    default:
      endpoint = preset.endpointTemplate.replace('{region}', region)
  }
  return {
    endpoint,
    region: preset.signingRegion === 'from-input' ? region : (id === 'minio' && region !== '' ? region : preset.signingRegion),
    forcePathStyle: preset.forcePathStyle,
  }
}
