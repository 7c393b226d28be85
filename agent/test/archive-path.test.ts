import t from 'tap'
import { CloudPilotError } from '@cloudpilot/protocol'
import { entryComponents } from '../src/restore/archive-path.ts'

function refused (name: string): CloudPilotError | null {
  try {
    entryComponents(name)
    return null
  } catch (err) {
    return err as CloudPilotError
  }
}

t.test('relative names become their components; ./, . and repeated or trailing slashes are normalised', async (t) => {
  t.same(entryComponents('var/www/site/index.php'), ['var', 'www', 'site', 'index.php'])
  t.same(entryComponents('./var/www/'), ['var', 'www'])
  t.same(entryComponents('var//www/./x'), ['var', 'www', 'x'])
  t.same(entryComponents('./'), [], 'the archive root')
  t.same(entryComponents('.'), [])
  t.same(entryComponents('..hidden/a..b/...'), ['..hidden', 'a..b', '...'], 'dots inside names are names')
  t.same(entryComponents('back\\slash/x'), ['back\\slash', 'x'], 'a backslash is an ordinary character on Linux')
  t.same(entryComponents('résumé ✓/\n'), ['résumé ✓', '\n'])
})

t.test('names that could leave the target are refused with UNSAFE_ARCHIVE_ENTRY', async (t) => {
  for (const name of ['../evil', 'a/../../evil', 'a/b/..', '..', './..', 'a/./../b', '/etc/passwd', '//etc/passwd', '/', 'a\0b']) {
    const err = refused(name)
    t.ok(err instanceof CloudPilotError, `${JSON.stringify(name)} refused`)
    t.equal(err?.code, 'UNSAFE_ARCHIVE_ENTRY', JSON.stringify(name))
    t.match(err?.message ?? '', /nothing was written outside the target path/)
  }
  t.match(refused('../evil')?.message ?? '', '".." component')
  t.match(refused('/etc/passwd')?.message ?? '', 'absolute path')
  t.match(refused('a\0b')?.message ?? '', 'NUL')
})
