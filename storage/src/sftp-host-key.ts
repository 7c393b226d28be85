import { createHash } from 'node:crypto'
import { CloudPilotError } from '@cloudpilot/protocol'

/**
 * SSH host key fingerprints as OpenSSH prints them (`ssh-keygen -lf key.pub`, and the first-connection prompt of
 * `ssh`): `SHA256:<base64 without padding>` of the public key blob. The legacy `MD5:aa:bb:...` form (older
 * `ssh-keygen -E md5`, some hosting panels) is accepted for pinning too.
 */

export function sha256Fingerprint (keyBlob: Buffer): string {
  return 'SHA256:' + createHash('sha256').update(keyBlob).digest('base64').replace(/=+$/, '')
}

function md5Fingerprint (keyBlob: Buffer): string {
  return 'MD5:' + (createHash('md5').update(keyBlob).digest('hex').match(/../g) ?? []).join(':')
}

export interface PinnedFingerprint {
  /** As configured, for messages. */
  text: string
  matches: (keyBlob: Buffer) => boolean
}

/** Parses a configured fingerprint; VALIDATION_FAILED when it is neither SHA256:<base64> nor MD5:<hex pairs>. */
export function parseFingerprint (input: string): PinnedFingerprint {
  const text = input.trim()
  const sha = /^SHA256:([A-Za-z0-9+/]{43})=?$/.exec(text)
  if (sha?.[1] !== undefined) {
    const wanted = `SHA256:${sha[1]}`
    return { text: wanted, matches: (blob) => sha256Fingerprint(blob) === wanted }
  }
  const md5 = /^(?:MD5:)?((?:[0-9a-fA-F]{2}:){15}[0-9a-fA-F]{2})$/.exec(text)
  if (md5?.[1] !== undefined) {
    const wanted = `MD5:${md5[1].toLowerCase()}`
    return { text: wanted, matches: (blob) => md5Fingerprint(blob) === wanted }
  }
  throw new CloudPilotError('VALIDATION_FAILED', 'sftp hostKeyFingerprint must look like "SHA256:<43 base64 characters>" as printed by ssh-keygen -lf (or the legacy "MD5:aa:bb:...")')
}

/** How to read the right fingerprint on the server, for hints. */
export const FINGERPRINT_HOWTO = 'On the server, run: for f in /etc/ssh/ssh_host_*_key.pub; do ssh-keygen -lf "$f"; done'
