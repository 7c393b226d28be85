import type { CoordinatorFrame } from './frames.ts'
import { decodeFrame, type DecodeResult, type FrameChecker, type FrameData } from './frame-decode.ts'
import { COORDINATOR_FRAME_CHECKS } from './coordinator-frame-checks.generated.ts'

const CHECKERS = new Map<string, FrameChecker>(Object.entries(COORDINATOR_FRAME_CHECKS).map(([type, check]) => [type, {
  check,
  // The generated checks say only whether a frame is valid; the coordinator logs the frame it sent.
  errors: () => [],
}]))

/**
 * Decode and validate a frame sent by the coordinator (used by the agent). The checks are the ones TypeBox
 * compiles from frames.ts, generated ahead of time so that the agent does not load TypeBox.
 */
export function decodeCoordinatorFrame (data: FrameData): DecodeResult<CoordinatorFrame> {
  return decodeFrame<CoordinatorFrame>((type) => CHECKERS.get(type), data)
}
