import t from 'tap'
import { chmod, writeFile } from 'node:fs/promises'
import { createHash } from 'node:crypto'
import path from 'node:path'
import { createCompressor } from '../src/pipeline/compressor.ts'
import { tempDir } from './helpers/backup-fixtures.ts'

const CHUNK = 64 * 1024

t.test('pigz gets its input queued ahead (about 1 MiB), never the whole stream, and every byte arrives', async (t) => {
  // A stand-in for pigz that starts reading late, then copies its input unchanged.
  const dir = await tempDir(t)
  const fake = path.join(dir, 'pigz')
  await writeFile(fake, '#!/bin/sh\nsleep 1\nexec cat\n')
  await chmod(fake, 0o755)
  const { stream } = createCompressor('gzip', { pigzPath: fake, cores: 1 })
  const input = createHash('sha256')
  const output = createHash('sha256')
  let outBytes = 0
  stream.on('data', (chunk: Buffer) => { output.update(chunk); outBytes += chunk.length })
  const ended = new Promise<void>((resolve, reject) => { stream.once('end', resolve); stream.once('error', reject) })

  const total = 256
  let accepted = 0
  const writing = (async () => {
    for (let i = 0; i < total; i++) {
      const chunk = Buffer.alloc(CHUNK, i % 251)
      input.update(chunk)
      // Write, and wait only when the stream asks for it (backpressure).
      if (!stream.write(chunk)) await new Promise((resolve) => stream.once('drain', resolve))
      accepted++
    }
    stream.end()
  })()
  await new Promise((resolve) => setTimeout(resolve, 500))
  // Taken before the child reads anything: the stdin queue (1 MiB), the kernel pipe and the stream's buffers.
  t.ok(accepted * CHUNK >= 1024 * 1024, `at least 1 MiB queued ahead of the child (${accepted} chunks)`)
  t.ok(accepted < total / 2, `but not the whole stream (${accepted} of ${total} chunks)`)
  await writing
  await ended
  t.equal(outBytes, total * CHUNK, 'every byte went through')
  t.equal(output.digest('hex'), input.digest('hex'), 'in order, unchanged')
})
