import { defineConfig } from 'drizzle-kit'

// `npx drizzle-kit generate (run from coordinator/)` writes a new migration after a schema change.
export default defineConfig({
  dialect: 'postgresql',
  schema: './src/db/schema.ts',
  out: './migrations',
})
