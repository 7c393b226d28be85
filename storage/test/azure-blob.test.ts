/**
 * The azure_blob driver against azurite (Microsoft's Azure Storage emulator, helpers/azurite.ts): the conformance
 * suite, what an interrupted put leaves (uncommitted blocks only: invisible, discarded by the service), and the
 * upload rate limit.
 */
import t from 'tap'
import { Readable } from 'node:stream'
import { BlobServiceClient } from '@azure/storage-blob'
import { AzureBlobDriver } from '../src/azure-blob.ts'
import { runConformance } from './conformance.ts'
import { azuriteUnavailable, startAzurite } from './helpers/azurite.ts'
import { byteSource, drain } from './helpers/byte-source.ts'
import { gate } from './helpers/service-gate.ts'

if (gate(t, azuriteUnavailable())) {
  const azurite = await startAzurite()
  t.teardown(() => azurite.close())
  const prefix = 'cp-conformance'
  const raw = BlobServiceClient.fromConnectionString(azurite.connectionString).getContainerClient(azurite.container)

  const open = (config: Record<string, unknown> = {}): AzureBlobDriver => new AzureBlobDriver(
    { container: azurite.container, prefix, ...config },
    { connectionString: azurite.connectionString },
    { allowPrivateEndpoints: true },
  )

  runConformance(t, 'azure_blob (azurite)', async () => open(), { partBoundary: 4 * 1024 * 1024 })

  t.test('azure_blob: the container after the conformance run', async (t) => {
    const committed: string[] = []
    for await (const item of raw.listBlobsFlat()) committed.push(item.name)
    t.same(committed, [], 'no blobs: every object was written under the prefix and deleted')
  })

  t.test('azure_blob: an interrupted put leaves only uncommitted blocks, invisible under the key', async (t) => {
    const driver = open()
    t.teardown(() => driver.close())
    const ac = new AbortController()
    const src = byteSource(30 * 1024 * 1024, { chunkSize: 1024 * 1024, onProgress: (n) => { if (n >= 24 * 1024 * 1024) ac.abort() } })
    await t.rejects(driver.put('interrupted/x.bin', src.stream, { signal: ac.signal }), { name: 'AbortError' })
    t.equal(await driver.stat('interrupted/x.bin'), null, 'stat: nothing')
    const visible: string[] = []
    for await (const item of raw.listBlobsFlat({ prefix: `${prefix}/interrupted/` })) visible.push(item.name)
    t.same(visible, [], 'list: nothing')
    const withUncommitted: string[] = []
    for await (const item of raw.listBlobsFlat({ prefix: `${prefix}/interrupted/`, includeUncommitedBlobs: true })) withUncommitted.push(item.name)
    t.same(withUncommitted, [`${prefix}/interrupted/x.bin`], 'a listing that asks for uncommitted blobs shows the staged blocks\' blob')
    const blocks = await raw.getBlockBlobClient(`${prefix}/interrupted/x.bin`).getBlockList('all')
    t.same(blocks.committedBlocks ?? [], [], 'with no committed block')
    const staged = blocks.uncommittedBlocks?.length ?? 0
    t.ok(staged >= 1 && staged <= 7, `${staged} uncommitted blocks of 4 MiB (Azure discards them after a week); staging stopped at the abort`)
  })

  t.test('azure_blob: content type and metadata are set on the blob', async (t) => {
    const driver = open()
    t.teardown(() => driver.close())
    await driver.put('props/a.sql.gz', Readable.from([Buffer.from('x')]), { contentType: 'application/gzip', metadata: { sha256: 'abc' } })
    const props = await raw.getBlobClient(`${prefix}/props/a.sql.gz`).getProperties()
    t.equal(props.contentType, 'application/gzip')
    t.same(props.metadata, { sha256: 'abc' })
    await driver.delete('props/a.sql.gz')
  })

  t.test('azure_blob: accountName + accountKey and a SAS token work as well as a connection string', async (t) => {
    const { generateAccountSASQueryParameters, AccountSASPermissions, AccountSASResourceTypes, AccountSASServices, StorageSharedKeyCredential } = await import('@azure/storage-blob')
    const sas = generateAccountSASQueryParameters({
      expiresOn: new Date(Date.now() + 3600_000),
      permissions: AccountSASPermissions.parse('racwdl'),
      resourceTypes: AccountSASResourceTypes.parse('sco').toString(),
      services: AccountSASServices.parse('b').toString(),
    }, new StorageSharedKeyCredential(azurite.accountName, azurite.accountKey)).toString()
    for (const [label, credentials] of [
      ['accountName + accountKey', { accountName: azurite.accountName, accountKey: azurite.accountKey }],
      ['sasToken', { sasToken: `?${sas}` }],
      ['SAS connection string', { connectionString: `BlobEndpoint=${azurite.accountUrl};SharedAccessSignature=${sas}` }],
    ] as Array<[string, Record<string, string>]>) {
      const driver = new AzureBlobDriver({ container: azurite.container, accountUrl: azurite.accountUrl }, credentials, { allowPrivateEndpoints: true })
      t.teardown(() => driver.close())
      t.ok((await driver.test()).latencyMs >= 0, `${label}: test() passes`)
    }
  })

  t.test('azure_blob: rateLimitBytesPerSecond holds the upload to the configured rate', async (t) => {
    const limited = open({ rateLimitBytesPerSecond: 1024 * 1024 })
    t.teardown(() => limited.close())
    const src = byteSource(1536 * 1024, { chunkSize: 64 * 1024 })
    const started = performance.now()
    await limited.put('rate/limited.bin', src.stream)
    const seconds = (performance.now() - started) / 1000
    t.ok(seconds >= 1.3 && seconds < 5, `1.5 MiB at 1 MiB/s took ${seconds.toFixed(2)} s`)
    t.equal((await drain(await limited.get('rate/limited.bin'))).sha256, src.sha256(), 'bytes intact')
    await limited.delete('rate/limited.bin')
  })
}
