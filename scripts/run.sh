#!/bin/sh
# Run the tsnet plugin on this host with the embedded JSON store:
# installs what is missing, builds, then serves /run/docker/plugins/tsnet.sock
# (override with TSNET_SOCKET, TSNET_STATE_DIR, ... see README).
set -eu
cd "$(dirname "$0")/.."
./scripts/prepare.sh "tsnet programs bridges and firewall rules"
# A 1 MB young generation keeps resident memory under 100 MB at 1,000
# endpoints (docs/benchmarks.md); tsnet's request rate makes the extra
# scavenges cheap.
exec node --max-semi-space-size=1 dist/main.js
