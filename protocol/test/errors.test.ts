import t from 'tap'
import { readFileSync } from 'node:fs'
import { ERRORS, ERROR_CODES, CloudPilotError, toErrorData } from '@cloudpilot/protocol'

t.test('every code has a status, a message and a hint that says what to do', async (t) => {
  for (const code of ERROR_CODES) {
    const d = ERRORS[code]
    t.ok(d.status >= 400 && d.status < 600, `${code} status`)
    t.ok(d.message.length > 5, `${code} message`)
    t.ok(d.hint.length > 10, `${code} hint`)
  }
})

t.test('every code is documented in README.md', async (t) => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8')
  for (const code of ERROR_CODES) t.match(readme, new RegExp('`' + code + '`'), `${code} documented`)
})

t.test('CloudPilotError carries the registry defaults and round-trips as data', async (t) => {
  const e = new CloudPilotError('ACCESS_DENIED')
  t.equal(e.status, 400)
  t.equal(e.hint, ERRORS.ACCESS_DENIED.hint)
  const back = CloudPilotError.fromData(e.toData())
  t.equal(back.code, 'ACCESS_DENIED')
  t.equal(back.message, e.message)
})

t.test('unknown errors become INTERNAL (or the fallback) with their message', async (t) => {
  t.same(toErrorData(new Error('boom')).code, 'INTERNAL')
  t.same(toErrorData(new Error('boom'), 'UPLOAD_FAILED').code, 'UPLOAD_FAILED')
  t.same(toErrorData({ code: 'TIMEOUT', message: 'slow' }).code, 'TIMEOUT')
})

t.test('the README error tables are the registry (regenerate with node scripts/error-table.ts)', async (t) => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8')
  const block = /<!-- errors:begin -->\n([\s\S]*?)<!-- errors:end -->/.exec(readme)?.[1]
  t.ok(block !== undefined, 'README has the errors block')
  const { execFileSync } = await import('node:child_process')
  const generated = execFileSync(process.execPath, [new URL('../../scripts/error-table.ts', import.meta.url).pathname], { encoding: 'utf8' })
  t.equal(block?.trim(), generated.trim())
})
