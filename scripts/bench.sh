#!/bin/sh
# npm run bench: installs what is missing, builds, runs the benchmarks in a
# lab of their own (namespaces created and removed by the run).
set -eu
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "the benchmark runs dockerd in network namespaces: run as root" >&2; exit 1; }
./scripts/ensure-deps.sh --test
[ -d node_modules ] || npm ci --no-audit --no-fund
npm run build --silent
exec npx tsx bench/bench.ts "$@"
