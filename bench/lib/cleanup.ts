/**
 * Everything the benchmark creates (processes, databases, directories) registers how to undo it here; the
 * undo steps run newest first at the end, on failure, and on Ctrl-C / SIGTERM.
 */
type Undo = () => Promise<void> | void

const steps: Array<{ what: string, undo: Undo }> = []
let running: Promise<void> | null = null

export function onCleanup (what: string, undo: Undo): () => Promise<void> {
  const step = { what, undo }
  steps.push(step)
  // Returns a function that runs this step now (and only once).
  return async () => {
    const i = steps.indexOf(step)
    if (i === -1) return
    steps.splice(i, 1)
    await runStep(step)
  }
}

async function runStep (step: { what: string, undo: Undo }): Promise<void> {
  try {
    await step.undo()
  } catch (err) {
    process.stderr.write(`cleanup: ${step.what}: ${(err as Error).message}\n`)
  }
}

/** A point in the undo stack: `cleanupTo(mark)` undoes only what was registered after it. */
export function cleanupMark (): number {
  return steps.length
}

export async function cleanupTo (mark: number): Promise<void> {
  while (steps.length > mark) await runStep(steps.pop() as { what: string, undo: Undo })
}

export async function cleanupAll (): Promise<void> {
  running ??= (async () => {
    while (steps.length > 0) await runStep(steps.pop() as { what: string, undo: Undo })
  })()
  await running
  running = null
}

export function cleanupOnSignals (): void {
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      process.stderr.write(`\n${signal}: cleaning up...\n`)
      cleanupAll().finally(() => process.exit(130))
    })
  }
}
