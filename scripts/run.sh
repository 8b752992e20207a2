#!/bin/sh
# Run the tsnet plugin on this host with the embedded JSON store:
# installs what is missing, builds, then serves /run/docker/plugins/tsnet.sock
# (override with TSNET_SOCKET, TSNET_STATE_DIR, ... see README).
set -eu
cd "$(dirname "$0")/.."
./scripts/prepare.sh "tsnet programs bridges and firewall rules"
# A 1 MB young generation, and an old generation grown by 20% rather than
# V8's default factor (up to 4x) between collections, keep resident memory
# under 100 MB at 1,000 endpoints (docs/benchmarks.md); the extra collections
# stayed within the IPAM benchmark's noise (~2,100 pairs/s either way, 50
# clients saturating the plugin). The same flags are in
# package.json, config.json and the Dockerfile (test/unit/plugin.test.ts).
exec node --max-semi-space-size=1 --heap-growing-percent=20 dist/main.js
