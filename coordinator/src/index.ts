export { createCoordinator, type Coordinator } from './coordinator.ts'
export { configFromEnv, DEFAULTS, type CoordinatorConfig } from './config.ts'
