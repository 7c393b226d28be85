import type { TSchema, Static } from 'typebox'
import { Compile } from 'typebox/compile'
import { CloudPilotError } from '@cloudpilot/protocol'

const cache = new WeakMap<TSchema, ReturnType<typeof Compile>>()

/** Validates a value the route schema could not (it depends on another field, e.g. a plan's type). */
export function validateWith<T extends TSchema> (schema: T, value: unknown, what: string): Static<T> {
  let validator = cache.get(schema)
  if (validator === undefined) {
    validator = Compile(schema)
    cache.set(schema, validator)
  }
  if (!validator.Check(value)) {
    const details = validator.Errors(value).slice(0, 5).map((e) => `${what}${e.instancePath} ${e.message}`).join('; ')
    throw new CloudPilotError('VALIDATION_FAILED', details || `${what} is not valid`)
  }
  return value as Static<T>
}
