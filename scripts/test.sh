#!/bin/sh
# The whole test suite: unit, API, kernel (throwaway namespaces) and
# end-to-end (real dockerd hosts in namespaces), the e2e tier twice: on
# Debian 12's dockerd 20.10 and on dockerd 26.1 (TSNET_LAB_DOCKERD=26,
# scripts/fetch-dockerd.sh). Installs the Debian and npm packages it needs
# when they are missing. Needs root: every tier that touches the kernel does
# so only inside namespaces it creates and removes.
# Extra arguments go to tap, for one run on the dockerd TSNET_LAB_DOCKERD
# names (e.g. scripts/test.sh test/unit, TSNET_LAB_DOCKERD=26 scripts/test.sh test/e2e).
set -eu
cd "$(dirname "$0")/.."
./scripts/prepare.sh "the kernel and e2e tiers create network namespaces" --test
# Always a fresh build for the tests, whatever the timestamps say.
npm run build --silent
npx tsc -p tsconfig.test.json
# tap keeps one results file per test file; each run keeps its own copy so
# the e2e files' two runs are both counted.
results=.tap/results
rm -rf .tap/test-results "$results"
status=0
if [ "$#" -gt 0 ]; then
  npx tap --output-dir "$results/dockerd-${TSNET_LAB_DOCKERD:-20}" "$@" || status=$?
else
  npx tap --output-dir "$results/dockerd-20" test/unit test/api test/kernel test/e2e || status=$?
  # The second run leaves out what measures scale rather than the dockerd
  # (TSNET_LAB_HEAVY=0: bursts of 30 containers); the first run has it.
  TSNET_LAB_DOCKERD=26 TSNET_LAB_HEAVY=0 npx tap --output-dir "$results/dockerd-26" test/e2e || status=$?
fi
# tap's own summary is not what CI reads; count test points from its results.
node scripts/count-results.mjs "$results" || status=$?
exit $status
