import { createHash } from 'node:crypto'

/**
 * Cloudinary's signatures and naming, as documented:
 *
 * - Upload API requests are signed with SHA-1 (or SHA-256, an account setting) over the parameters except file,
 *   cloud_name, resource_type and api_key, sorted by name, as `k=v` joined with `&` (unencoded), followed by the
 *   API secret (cloudinary.com/documentation/authentication_signatures).
 * - Delivery URLs of `authenticated` assets carry `s--<signature>--`: the first 8 characters of the URL-safe
 *   base64 SHA-1 of (transformation/)public_id followed by the API secret (…/control_access_to_media#signed_delivery_urls,
 *   as the SDKs build it).
 * - Public IDs may not contain ? & # \ % < > + and may not start or end with a space or '/'
 *   (…/upload_parameters#public_id). Keys are mapped to public IDs character by character (so key prefixes stay
 *   public ID prefixes): those characters, spaces and the escape character '~' itself become `~XX` (hex).
 */

export type SignatureAlgorithm = 'sha1' | 'sha256'

export function apiSignature (params: Record<string, string>, apiSecret: string, algorithm: SignatureAlgorithm = 'sha1'): string {
  const toSign = Object.keys(params)
    .filter((k) => !['file', 'cloud_name', 'resource_type', 'api_key', 'signature'].includes(k) && params[k] !== undefined && params[k] !== '')
    .sort()
    .map((k) => `${k}=${params[k] ?? ''}`)
    .join('&')
  return createHash(algorithm).update(toSign + apiSecret, 'utf8').digest('hex')
}

export function deliverySignature (publicId: string, apiSecret: string): string {
  const digest = createHash('sha1').update(publicId + apiSecret, 'utf8').digest('base64')
  return `s--${digest.slice(0, 8).replace(/\//g, '_').replace(/\+/g, '-')}--`
}

const ESCAPED = /[?&#\\%<>+~ ]/g

export function publicIdOf (key: string): string {
  return key.replace(ESCAPED, (c) => `~${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`)
}

export function keyOf (publicId: string): string {
  return publicId.replace(/~([0-9A-Fa-f]{2})/g, (_m, hex: string) => String.fromCharCode(parseInt(hex, 16)))
}

/** A public ID in a delivery URL path: everything but [A-Za-z0-9_.-/:] percent-encoded (the SDKs' smart escape). */
export function escapePublicId (publicId: string): string {
  return publicId.replace(/[^A-Za-z0-9_.\-/:]+/g, (run) => encodeURIComponent(run))
}
