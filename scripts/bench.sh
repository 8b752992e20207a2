#!/bin/sh
# npm run bench: installs what is missing, builds, runs the benchmarks in a
# lab of their own (namespaces created and removed by the run).
set -eu
cd "$(dirname "$0")/.."
./scripts/prepare.sh "the benchmark runs dockerd in network namespaces" --test
exec npx tsx bench/bench.ts "$@"
