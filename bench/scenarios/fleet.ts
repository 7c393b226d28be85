import type { Flags } from '../lib/flags.ts'
import type { ScenarioResult } from '../lib/result.ts'
export async function fleet (_flags: Flags, _dir?: string): Promise<ScenarioResult> { throw new Error('not yet') }
