import t from 'tap'
import { CloudPilotError } from '@cloudpilot/protocol'
import { clientMissing, mapDumpFailure, mapSpoolError, mapUploadError, stderrHasError } from '../src/sources/error-mapping.ts'

const fail = (engine: 'mysql' | 'postgresql', stderr: string, secrets: string[] = []): CloudPilotError =>
  mapDumpFailure({ engine, tool: engine === 'mysql' ? 'mariadb-dump' : 'pg_dump', stderr, code: 2, signal: null, secrets })

// Real stderr lines of pg_dump 15 and mariadb-dump 10.11 (and MySQL 8 wording where it differs).
const CASES: Array<[string, 'mysql' | 'postgresql', string, string]> = [
  ['pg wrong password', 'postgresql', 'pg_dump: error: connection to server at "127.0.0.1", port 5432 failed: FATAL:  password authentication failed for user "backup"', 'ACCESS_DENIED'],
  ['pg no password', 'postgresql', 'pg_dump: error: connection to server at "127.0.0.1", port 5432 failed: fe_sendauth: no password supplied', 'ACCESS_DENIED'],
  ['pg unknown role', 'postgresql', 'pg_dump: error: connection to server on socket "/run/postgresql/.s.PGSQL.5432" failed: FATAL:  role "nobody" does not exist', 'ACCESS_DENIED'],
  ['pg hba', 'postgresql', 'pg_dump: error: connection to server at "10.0.0.5", port 5432 failed: FATAL:  no pg_hba.conf entry for host "10.0.0.9", user "backup", database "shop", no encryption', 'ACCESS_DENIED'],
  ['pg table grant', 'postgresql', 'pg_dump: error: query failed: ERROR:  permission denied for table orders\npg_dump: detail: Query was: LOCK TABLE public.orders IN ACCESS SHARE MODE', 'ACCESS_DENIED'],
  ['pg refused', 'postgresql', 'pg_dump: error: connection to server at "127.0.0.1", port 1 failed: Connection refused\n\tIs the server running on that host and accepting TCP/IP connections?', 'SOURCE_UNREACHABLE'],
  ['pg unknown host', 'postgresql', 'pg_dump: error: could not translate host name "db.invalid" to address: Name or service not known', 'SOURCE_UNREACHABLE'],
  ['pg timeout', 'postgresql', 'pg_dump: error: connection to server at "10.1.2.3", port 5432 failed: timeout expired', 'SOURCE_UNREACHABLE'],
  ['pg missing db', 'postgresql', 'pg_dump: error: connection to server at "127.0.0.1", port 5432 failed: FATAL:  database "nope" does not exist', 'SOURCE_NOT_FOUND'],
  ['pg other', 'postgresql', 'pg_dump: error: query failed: ERROR:  could not open relation with OID 12345', 'DUMP_FAILED'],
  ['my wrong password', 'mysql', 'mariadb-dump: Got error: 1045: "Access denied for user \'backup\'@\'localhost\' (using password: YES)" when trying to connect', 'ACCESS_DENIED'],
  ['my db grant', 'mysql', 'mariadb-dump: Got error: 1044: "Access denied for user \'backup\'@\'%\' to database \'shop\'" when selecting the database', 'ACCESS_DENIED'],
  ['my refused', 'mysql', 'mariadb-dump: Got error: 2002: "Can\'t connect to server on \'127.0.0.1\' (115)" when trying to connect', 'SOURCE_UNREACHABLE'],
  ['mysql8 refused', 'mysql', "mysqldump: Got error: 2003: Can't connect to MySQL server on '127.0.0.1:1' (111) when trying to connect", 'SOURCE_UNREACHABLE'],
  ['my unknown host', 'mysql', 'mariadb-dump: Got error: 2005: "Unknown server host \'db.invalid\' (-2)" when trying to connect', 'SOURCE_UNREACHABLE'],
  ['my lost', 'mysql', "mariadb-dump: Error 2013: Lost connection to server during query when dumping table `orders` at row: 1234", 'SOURCE_UNREACHABLE'],
  ['my missing db', 'mysql', 'mariadb-dump: Got error: 1049: "Unknown database \'nope\'" when selecting the database', 'SOURCE_NOT_FOUND'],
  ['my other', 'mysql', "mariadb-dump: Couldn't execute 'SHOW CREATE TABLE `t`': Table 'shop.t' doesn't exist in engine (1932)", 'DUMP_FAILED'],
]

t.test('dump stderr maps to the registry codes', async (t) => {
  for (const [name, engine, stderr, code] of CASES) {
    const err = fail(engine, stderr)
    t.equal(err.code, code, name)
    t.ok(err.message.length > 10, `${name}: message`)
  }
})

t.test('ACCESS_DENIED hints name the grants per engine', async (t) => {
  t.match(fail('mysql', 'Access denied for user').hint, /SELECT, SHOW VIEW, TRIGGER, LOCK TABLES and EVENT.*PROCESS/)
  t.match(fail('postgresql', 'password authentication failed').hint, /CONNECT on the database and SELECT on all its tables.*pg_read_all_data/)
})

t.test('DUMP_FAILED carries the tool\'s last error line; a password never appears', async (t) => {
  const err = fail('postgresql', 'pg_dump: warning: something harmless\npg_dump: error: query failed: ERROR:  weird thing with hunter2-secret\n', ['hunter2-secret'])
  t.equal(err.code, 'DUMP_FAILED')
  t.match(err.message, /pg_dump exited with code 2: pg_dump: error: query failed: ERROR:  weird thing with \[redacted\]/)
  t.notMatch(err.message, 'hunter2-secret')
})

t.test('errors on stderr are told from warnings', async (t) => {
  t.notOk(stderrHasError('pg_dump: warning: there are circular foreign-key constraints on this table:'))
  t.notOk(stderrHasError('mariadb-dump: Warning: Skipping the data of table mysql.event. Specify the --events option explicitly.'))
  t.ok(stderrHasError('pg_dump: error: query failed'))
  t.ok(stderrHasError("mysqldump: Couldn't execute 'SHOW EVENTS'"))
  t.ok(stderrHasError('mariadb-dump: Got error: 1045'))
})

t.test('missing tools name the Debian package; upload and spool errors keep their cause', async (t) => {
  t.match(clientMissing('pg_dump', 'postgresql').hint, /apt-get install postgresql-client/)
  t.match(clientMissing('mysqldump', 'mysql').hint, /apt-get install mariadb-client/)
  const upload = mapUploadError(new CloudPilotError('AUTH_FAILED', 'The S3 endpoint rejected the access key.'), 's3')
  t.match(upload, { code: 'UPLOAD_FAILED', message: /s3 destination failed: AUTH_FAILED: The S3 endpoint rejected the access key/ })
  t.equal((upload as CloudPilotError).retryable, false, 'a credential error is not retryable')
  t.match(mapUploadError(new Error('socket hang up'), 'sftp'), { code: 'UPLOAD_FAILED', message: /socket hang up/ })
  const abort = new DOMException('aborted', 'AbortError')
  t.equal(mapUploadError(abort, 's3'), abort, 'an abort stays an abort')
  t.match(mapSpoolError(Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' }), '/spool/x'), { code: 'NO_SPACE' })
})
