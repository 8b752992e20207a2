#!/bin/sh
# npm run demo: installs what is missing, builds, and runs scripts/demo.ts.
set -eu
cd "$(dirname "$0")/.."
./scripts/prepare.sh "the demo creates network namespaces" --test
exec npx tsx scripts/demo.ts
