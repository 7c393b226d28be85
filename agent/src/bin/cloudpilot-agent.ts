#!/usr/bin/env node
import { main } from '../cli.ts'

main(process.argv.slice(2)).then((code) => {
  process.exitCode = code
  // Whatever handle might still be open (a stuck socket), the command is over.
  setTimeout(() => process.exit(code), 1000).unref()
}, (err: unknown) => {
  process.stderr.write(`cloudpilot-agent: ${(err as Error).stack ?? String(err)}\n`)
  process.exitCode = 1
})
