import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import type { App } from '../http/app.ts'
import type { CoordinatorContext } from '../context.ts'

const INSTALL_SH = fileURLToPath(new URL('../../../deploy/install.sh', import.meta.url))
const PLACEHOLDER = '__CLOUDPILOT_COORDINATOR_URL__'

/** GET /install.sh: deploy/install.sh with this coordinator's public URL filled in (the one-line bootstrap). */
export function installScriptRoutes (app: App, ctx: CoordinatorContext): void {
  let template: Promise<string> | null = null
  app.get('/install.sh', { schema: { tags: ['servers'], summary: 'The agent installer (curl -fsSL <url>/install.sh | sudo bash -s -- --token T)', security: [] } }, async (_request, reply) => {
    template ??= readFile(INSTALL_SH, 'utf8')
    const url = ctx.publicUrl()
    // The URL lands inside single quotes in the script: refuse anything that could leave them.
    if (!/^https?:\/\/[A-Za-z0-9.:[\]_~%/-]+$/.test(url)) throw new Error(`PUBLIC_URL ${JSON.stringify(url)} cannot be used in the install script`)
    const body = (await template).replace(`'${PLACEHOLDER}'`, `'${url}'`)
    return reply.type('text/x-shellscript; charset=utf-8').header('cache-control', 'no-store').send(body)
  })
}
