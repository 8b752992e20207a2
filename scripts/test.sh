#!/bin/sh
# The whole test suite: unit, API, kernel (throwaway namespaces) and
# end-to-end (real dockerd hosts in namespaces). Installs the Debian and npm
# packages it needs when they are missing. Needs root: every tier that
# touches the kernel does so only inside namespaces it creates and removes.
# Extra arguments go to tap (e.g. scripts/test.sh test/unit).
set -eu
cd "$(dirname "$0")/.."
./scripts/prepare.sh "the kernel and e2e tiers create network namespaces" --test
# Always a fresh build for the tests, whatever the timestamps say.
npm run build --silent
npx tsc -p tsconfig.test.json
rm -rf .tap/test-results
status=0
if [ "$#" -gt 0 ]; then npx tap "$@" || status=$?; else npx tap test/unit test/api test/kernel test/e2e || status=$?; fi
# tap's own summary is not what CI reads; count test points from its results.
node scripts/count-results.mjs .tap/test-results || status=$?
exit $status
