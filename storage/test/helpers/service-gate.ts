/**
 * How a test file that needs a service (sshd, azurite) behaves when the service cannot run here: on a developer
 * laptop the file is skipped with the reason; under CI=true the absence is a failure, never a silent skip.
 */
import type { TAP } from 'tap'

export function gate (t: TAP, unavailable: string | undefined): boolean {
  if (unavailable === undefined) return true
  if (process.env.CI === 'true') {
    t.fail(`required service unavailable under CI: ${unavailable}`)
  } else {
    t.comment(`skipped: ${unavailable}`)
    t.pass(`skipped: ${unavailable}`)
  }
  return false
}
