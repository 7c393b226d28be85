export { main } from './cli.ts'
export { startAgent, type AgentService } from './agent-service.ts'
export { readConfig, writeConfig, type AgentConfig } from './config.ts'
