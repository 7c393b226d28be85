/** `text` with every secret (of 4 characters or more) replaced by [redacted]: for messages that quote a service. */
export function redact (text: string, secrets: readonly string[]): string {
  let out = text
  for (const secret of secrets) {
    if (secret.length >= 4) out = out.split(secret).join('[redacted]')
  }
  return out
}
