import t from 'tap'
import { addressRefusal, checkEndpointHost, guardedLookup } from '../src/endpoint-guard.ts'

t.test('always refused: link-local, metadata, unspecified, multicast', async (t) => {
  for (const address of ['169.254.169.254', '169.254.0.1', 'fe80::1', 'fd00:ec2::254', '100.100.100.200', '0.0.0.0', '::', '224.0.0.1', 'ff02::1', '255.255.255.255', '::ffff:169.254.169.254', '::ffff:a9fe:a9fe']) {
    t.type(addressRefusal(address, true), 'string', `${address} refused even with private allowed`)
  }
})

t.test('loopback and private ranges only when allowed', async (t) => {
  for (const address of ['127.0.0.1', '127.1.2.3', '10.1.2.3', '172.16.0.1', '172.31.255.255', '192.168.1.1', '100.64.0.1', '::1', 'fd12:3456::1', '::ffff:127.0.0.1', '::ffff:7f00:1']) {
    t.type(addressRefusal(address, false), 'string', `${address} refused by default`)
    t.equal(addressRefusal(address, true), undefined, `${address} allowed when private endpoints are allowed`)
  }
})

t.test('public addresses are allowed', async (t) => {
  for (const address of ['52.216.8.1', '172.32.0.1', '8.8.8.8', '2600:1f18::1', '::ffff:52.216.8.1']) {
    t.equal(addressRefusal(address, false), undefined, address)
  }
})

t.test('checkEndpointHost checks literal addresses (bracketed IPv6 too), leaves names to the lookup', async (t) => {
  t.throws(() => checkEndpointHost('[::1]', false), { code: 'ENDPOINT_NOT_ALLOWED' })
  t.throws(() => checkEndpointHost('169.254.169.254', true), { code: 'ENDPOINT_NOT_ALLOWED' })
  t.doesNotThrow(() => checkEndpointHost('s3.example.net', false))
})

t.test('guardedLookup refuses a name that resolves to loopback, allows it when private is allowed', async (t) => {
  const lookup = (allow: boolean, all: boolean): Promise<{ err: NodeJS.ErrnoException | null, address: unknown }> => new Promise((resolve) => {
    guardedLookup(allow)('localhost', { all }, (err, address) => resolve({ err, address }))
  })
  const refused = await lookup(false, false)
  t.match(refused.err, { code: 'ENDPOINT_NOT_ALLOWED' })
  const one = await lookup(true, false)
  t.equal(one.err, null)
  t.match(one.address, /^(127\.0\.0\.1|::1)$/)
  const all = await lookup(true, true)
  t.ok(Array.isArray(all.address) && all.address.length >= 1, 'all: true answers a list')
})
