/**
 * Runs LocalDriver calls in a child process (the test starts it as an unprivileged user, since root ignores
 * permission bits) and prints one JSON line per call: {"call": "...", "ok": true} or {"call": "...", "code": "..."}.
 * argv: <root> <call>... where call is put:<key> | get:<key> | test
 */
import { Readable } from 'node:stream'
import { LocalDriver } from '../../src/local.ts'

const [root, ...calls] = process.argv.slice(2)
if (root === undefined) throw new Error('usage: local-driver-child.ts <root> <call>...')
const driver = new LocalDriver({ path: root })
for (const call of calls) {
  const [what, key = ''] = call.split(':')
  try {
    if (what === 'put') await driver.put(key, Readable.from([Buffer.from('data')]))
    else if (what === 'get') for await (const _chunk of await driver.get(key)) { /* read it all */ }
    else if (what === 'test') await driver.test()
    else throw new Error(`unknown call ${call}`)
    process.stdout.write(JSON.stringify({ call, ok: true }) + '\n')
  } catch (err) {
    process.stdout.write(JSON.stringify({ call, code: (err as { code?: unknown }).code ?? null, message: (err as Error).message }) + '\n')
  }
}
