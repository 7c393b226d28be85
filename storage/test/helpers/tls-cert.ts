/**
 * A self-signed certificate for 127.0.0.1 (openssl CLI), for TLS_ERROR tests: a client that verifies certificates
 * (every driver does) must refuse it. Returns the reason as a string when openssl is missing.
 */
import { execFile } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'

export interface SelfSignedCert {
  keyFile: string
  certFile: string
  key: Buffer
  cert: Buffer
  remove: () => Promise<void>
}

export async function selfSignedCert (): Promise<SelfSignedCert | string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'cloudpilot-tls-'))
  const keyFile = path.join(dir, 'key.pem')
  const certFile = path.join(dir, 'cert.pem')
  try {
    await promisify(execFile)('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyFile, '-out', certFile, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'])
  } catch (err) {
    await rm(dir, { recursive: true, force: true })
    return `openssl could not make a test certificate: ${(err as Error).message}`
  }
  return { keyFile, certFile, key: await readFile(keyFile), cert: await readFile(certFile), remove: async () => { await rm(dir, { recursive: true, force: true }) } }
}
