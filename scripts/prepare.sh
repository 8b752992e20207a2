#!/bin/sh
# Shared first steps of run.sh, test.sh, demo.sh and bench.sh: refuse to run
# without root (everything here programs the kernel, at least inside
# namespaces it creates), install missing Debian packages, install npm
# packages when the lock changed, build.
#   prepare.sh WHY [--test]
# WHY completes "run as root: ..." in the refusal.
set -eu
cd "$(dirname "$0")/.."
why=$1
shift
[ "$(id -u)" = 0 ] || { echo "run as root: $why" >&2; exit 1; }
./scripts/ensure-deps.sh "$@"
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
if [ ! -f dist/main.js ] || [ -n "$(find src -newer dist/main.js -name '*.ts' | head -1)" ]; then
  npm run build --silent
fi
