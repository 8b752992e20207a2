#!/bin/sh
# npm run demo: installs what is missing, builds, and runs scripts/demo.ts.
set -eu
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "the demo creates network namespaces: run as root" >&2; exit 1; }
./scripts/ensure-deps.sh --test
[ -d node_modules ] || npm ci --no-audit --no-fund
npm run build --silent
exec npx tsx scripts/demo.ts
