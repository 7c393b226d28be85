import t from 'tap'
import path from 'node:path'
import { mkdir, writeFile, symlink, utimes, chmod, readFile, readlink, stat, lstat, readdir } from 'node:fs/promises'
import { randomBytes } from 'node:crypto'
import { startCoordinator, startAgent, waitOnline, tempDir } from '../coordinator/test/helpers/processes.ts'
import { createPlan, downloadBackup, run, watchBackup } from './helpers.ts'

t.test('files backup to a local destination, downloaded through the agent and extracted with tar -xzf', async (t) => {
  const coordinator = await startCoordinator(t)
  const agent = await startAgent(t, coordinator)
  await waitOnline(coordinator, agent.serverId)

  const tree = await tempDir(t, 'cp-site')
  const site = path.join(tree, 'var', 'www', 'site')
  await mkdir(path.join(site, 'uploads', 'empty'), { recursive: true })
  await mkdir(path.join(site, 'cache'), { recursive: true })
  const big = randomBytes(3 * 1024 * 1024)
  await writeFile(path.join(site, 'index.php'), '<?php echo "hi";\n')
  await writeFile(path.join(site, 'uploads', 'photo.bin'), big)
  await writeFile(path.join(site, 'uploads', 'résumé ✓.txt'), 'unicode name\n')
  await writeFile(path.join(site, 'cache', 'junk.tmp'), 'excluded\n')
  await writeFile(path.join(site, 'debug.log'), 'excluded too\n')
  await chmod(path.join(site, 'index.php'), 0o640)
  await symlink('uploads/photo.bin', path.join(site, 'current-photo'))
  const mtime = new Date('2024-02-29T12:34:56Z')
  await utimes(path.join(site, 'index.php'), mtime, mtime)

  const destDir = await tempDir(t, 'cp-localdest')
  const dest = await coordinator.api.post('/api/v1/destinations', { name: 'second disk', type: 'local', config: { path: destDir } })
  t.equal(dest.status, 201)
  const planId = await createPlan(coordinator, {
    serverId: agent.serverId, type: 'files', destinationId: dest.body.id,
    source: { paths: [site], exclude: ['**/cache/**', '*.log'] },
  })
  const started = await coordinator.api.post(`/api/v1/plans/${planId}/run`)
  const { final: b } = await watchBackup(coordinator, started.body.id)
  t.equal(b.status, 'completed', JSON.stringify(b.error))
  t.equal(b.offsiteStatus, 'uploaded')
  t.match(b.fileName, /\.tar\.gz$/)
  const stored = await stat(path.join(destDir, b.objectKey))
  t.equal(stored.size, b.sizeBytes, 'the object is in the local destination directory')
  t.same((await readdir(path.dirname(path.join(destDir, b.objectKey)))).filter((n) => n.includes('.part')), [], 'no partial files left')

  // The coordinator cannot read server paths: the download comes from the agent over a one-off transfer.
  const dl = await downloadBackup(coordinator, b.id, path.join(await tempDir(t, 'cp-dl'), b.fileName))
  t.equal(dl.status, 200)
  t.equal(dl.sha256, b.sha256)
  const out = await tempDir(t, 'cp-extract')
  const archive = path.join(path.dirname(out), `${path.basename(out)}.tar.gz`)
  await writeFile(archive, await readFile(path.join(destDir, b.objectKey)))
  t.teardown(async () => { const { rm } = await import('node:fs/promises'); await rm(archive, { force: true }) })
  const tar = await run('tar', ['-xzf', archive, '-C', out])
  t.equal(tar.code, 0, tar.stderr)
  const restored = path.join(out, site.replace(/^\//, ''))
  t.same(await readFile(path.join(restored, 'uploads', 'photo.bin')), big, 'large file restored byte for byte')
  t.equal(await readFile(path.join(restored, 'uploads', 'résumé ✓.txt'), 'utf8'), 'unicode name\n')
  t.equal((await stat(path.join(restored, 'index.php'))).mode & 0o777, 0o640, 'mode kept')
  t.equal((await stat(path.join(restored, 'index.php'))).mtime.toISOString(), mtime.toISOString(), 'mtime kept')
  t.ok((await lstat(path.join(restored, 'current-photo'))).isSymbolicLink(), 'symlink kept as a symlink')
  t.equal(await readlink(path.join(restored, 'current-photo')), 'uploads/photo.bin')
  t.ok((await stat(path.join(restored, 'uploads', 'empty'))).isDirectory(), 'empty directory kept')
  await t.rejects(stat(path.join(restored, 'cache', 'junk.tmp')), 'excluded glob not archived')
  await t.rejects(stat(path.join(restored, 'debug.log')), 'excluded *.log not archived')
})

t.test('a plan without a destination keeps the local copy and downloads it from the spool', async (t) => {
  const coordinator = await startCoordinator(t)
  const agent = await startAgent(t, coordinator)
  await waitOnline(coordinator, agent.serverId)
  const tree = await tempDir(t, 'cp-etc')
  await writeFile(path.join(tree, 'app.conf'), 'key = value\n')
  const planId = await createPlan(coordinator, { serverId: agent.serverId, type: 'files', source: { paths: [tree] } })
  const plan = await coordinator.api.get(`/api/v1/plans/${planId}`)
  t.equal(plan.body.keepLocal, true, 'keepLocal defaults to true without a destination')
  const started = await coordinator.api.post(`/api/v1/plans/${planId}/run`)
  const { final: b } = await watchBackup(coordinator, started.body.id)
  t.equal(b.status, 'completed', JSON.stringify(b.error))
  t.equal(b.offsiteStatus, null, 'no offsite destination')
  t.equal(b.objectKey, null)
  t.match(b.localPath, new RegExp(`^${agent.spoolDir}/${agent.serverId}/${b.id}\\.tar\\.gz$`))
  const dl = await downloadBackup(coordinator, b.id, path.join(await tempDir(t, 'cp-dl'), b.fileName))
  t.equal(dl.status, 200)
  t.equal(dl.sha256, b.sha256)
})
