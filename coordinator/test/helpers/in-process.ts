import pino from 'pino'
import type { Test } from 'tap'
import { createCoordinator, type Coordinator, type CoordinatorOptions } from '../../src/coordinator.ts'
import { DEFAULTS, type CoordinatorConfig } from '../../src/config.ts'
import { apiClient, type ApiClient } from './api-client.ts'
import { tempPostgresDatabase } from './databases.ts'
import { tempDir } from './processes.ts'

export type StoreKind = 'pglite' | 'postgresql'
export const STORE_KINDS: StoreKind[] = ['pglite', 'postgresql']

/**
 * A coordinator in the test process, listening on a real loopback port, on the chosen store: embedded PGlite in
 * a temp DATA_DIR, or a fresh PostgreSQL database. Used by the API suites, which run against both stores.
 */
export async function inProcessCoordinator (t: Test, store: StoreKind, overrides: Partial<CoordinatorConfig> = {}, options: Omit<CoordinatorOptions, 'log'> = {}): Promise<{ coordinator: Coordinator, url: string, token: string, api: ApiClient }> {
  const dataDir = await tempDir(t, 'cp-api')
  const token = `cpk_test_${Math.random().toString(36).slice(2)}`
  const databaseUrl = store === 'postgresql' ? (await tempPostgresDatabase(t, 'cp_store')).url : null
  const config: CoordinatorConfig = {
    ...DEFAULTS, port: 0, host: '127.0.0.1', dataDir, databaseUrl, adminToken: token,
    allowPrivateEndpoints: true, heartbeatIntervalMs: 500, logLevel: 'silent', ...overrides,
  }
  const coordinator = await createCoordinator(config, { ...options, log: pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' }) })
  const { port } = await coordinator.listen()
  t.teardown(async () => { await coordinator.close() })
  const url = `http://127.0.0.1:${port}`
  return { coordinator, url, token, api: apiClient(url, token) }
}
