import Type, { type TEnum } from 'typebox'

/** A string enum schema from a readonly tuple of literals (used for every vocabulary); keeps the literal types. */
export function StringEnum<const T extends readonly string[]> (values: T, options: Record<string, unknown> = {}): TEnum<[...T]> {
  return Type.Enum([...values], options) as unknown as TEnum<[...T]>
}

export const Uuid = Type.String({ format: 'uuid' })
export const IsoTime = Type.String({ format: 'date-time' })
/** Non-empty string with a sane upper bound; most free-text fields use it. */
export const Text = (maxLength = 1024) => Type.String({ minLength: 1, maxLength })
