import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto'

const VERSION = 'v1'

/**
 * AES-256-GCM for secrets at rest (destination credentials, database passwords). Ciphertext format:
 * `v1.<iv b64>.<tag b64>.<ciphertext b64>`; a wrong key or tampered value fails authentication.
 */
export class SecretBox {
  readonly #key: Buffer

  constructor (key: Buffer) {
    if (key.length !== 32) throw new Error('master key must be 32 bytes')
    this.#key = key
  }

  seal (plaintext: string): string {
    const iv = randomBytes(12)
    const cipher = createCipheriv('aes-256-gcm', this.#key, iv)
    const data = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()])
    return [VERSION, iv.toString('base64'), cipher.getAuthTag().toString('base64'), data.toString('base64')].join('.')
  }

  open (sealed: string): string {
    const [version, iv, tag, data] = sealed.split('.')
    if (version !== VERSION || iv === undefined || tag === undefined || data === undefined) throw new Error('unrecognised secret format')
    const decipher = createDecipheriv('aes-256-gcm', this.#key, Buffer.from(iv, 'base64'))
    decipher.setAuthTag(Buffer.from(tag, 'base64'))
    return Buffer.concat([decipher.update(Buffer.from(data, 'base64')), decipher.final()]).toString('utf8')
  }

  sealJson (value: unknown): string {
    return this.seal(JSON.stringify(value))
  }

  openJson<T> (sealed: string): T {
    return JSON.parse(this.open(sealed)) as T
  }
}
