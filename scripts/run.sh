#!/bin/sh
# Run the tsnet plugin on this host with the embedded JSON store:
# installs what is missing, builds, then serves /run/docker/plugins/tsnet.sock
# (override with TSNET_SOCKET, TSNET_STATE_DIR, ... see README).
set -eu
cd "$(dirname "$0")/.."
./scripts/prepare.sh "tsnet programs bridges and firewall rules"
exec node dist/main.js
