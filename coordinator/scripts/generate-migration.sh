#!/usr/bin/env bash
# Writes a new migration under coordinator/migrations after a change to coordinator/src/db/schema.ts.
# drizzle-orm lives in coordinator/node_modules (its optional react peers clash with tap's at the root), while
# drizzle-kit is hoisted to the root and looks drizzle-orm up from there: link it for the duration of the run.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
name=${1:?usage: generate-migration.sh <name>}
link="$root/node_modules/drizzle-orm"
created=0
if [ ! -e "$link" ]; then ln -s ../coordinator/node_modules/drizzle-orm "$link"; created=1; fi
trap '[ "$created" = 1 ] && rm -f "$link"' EXIT
cd "$root/coordinator"
npx drizzle-kit generate --name "$name"
