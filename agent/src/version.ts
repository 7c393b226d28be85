import { PRODUCT_VERSION } from '@cloudpilot/protocol'

/** Replaced by the agent package build (esbuild `define`) with the version of the package; absent when run from source. */
declare const __CLOUDPILOT_AGENT_VERSION__: string | undefined

/** The version this agent reports in hello and `--version`: the package's own when installed, else the product's. */
export const AGENT_VERSION: string = typeof __CLOUDPILOT_AGENT_VERSION__ === 'string' ? __CLOUDPILOT_AGENT_VERSION__ : PRODUCT_VERSION
