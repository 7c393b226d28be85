#!/usr/bin/env node
import { configFromEnv } from '../config.ts'
import { createCoordinator } from '../coordinator.ts'

/** `cloudpilot-coordinator`: start the coordinator (configuration from the environment, see README). */
async function main (): Promise<void> {
  let config
  try {
    config = configFromEnv()
  } catch (err) {
    process.stderr.write(`cloudpilot-coordinator: ${(err as Error).message}\n`)
    process.exit(2)
  }
  const coordinator = await createCoordinator(config)
  const { port } = await coordinator.listen()
  const base = coordinator.ctx.publicUrl()
  const store = coordinator.database.kind === 'pglite' ? `embedded PGlite in ${config.dataDir}` : 'PostgreSQL (DATABASE_URL)'
  const lines = [
    '',
    `CloudPilot coordinator listening on ${base} (port ${port}); state in ${store}.`,
    `API reference: ${base}/docs`,
  ]
  if (coordinator.admin.createdToken !== null) {
    lines.push(
      '',
      `Admin API token (shown once; also written to ${coordinator.admin.tokenFile}):`,
      `  ${coordinator.admin.createdToken}`,
    )
  } else {
    lines.push(`Admin API token: ${config.adminToken !== null ? 'CLOUDPILOT_ADMIN_TOKEN' : `in ${config.dataDir}/admin-token`}`)
  }
  lines.push(
    '',
    'Enroll a server:',
    `  curl -s -X POST -H "Authorization: Bearer $TOKEN" ${base}/api/v1/enrollment-tokens`,
    '  then on the server run the installCommand it returns, or with the agent already installed:',
    `  cloudpilot-agent enroll --coordinator ${base} --token <enrollment token> && cloudpilot-agent run`,
    '',
  )
  process.stdout.write(lines.join('\n') + '\n')

  let stopping = false
  const stop = (signal: string): void => {
    if (stopping) return
    stopping = true
    coordinator.ctx.log.info({ signal }, 'stopping')
    const force = setTimeout(() => process.exit(1), 15_000)
    force.unref()
    coordinator.close().then(() => process.exit(0), (err: unknown) => {
      coordinator.ctx.log.error({ err }, 'error while stopping')
      process.exit(1)
    })
  }
  process.on('SIGTERM', () => stop('SIGTERM'))
  process.on('SIGINT', () => stop('SIGINT'))
}

main().catch((err: unknown) => {
  process.stderr.write(`cloudpilot-coordinator: failed to start: ${(err as Error).stack ?? String(err)}\n`)
  process.exit(1)
})
