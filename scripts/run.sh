#!/bin/sh
# Run the tsnet plugin on this host with the embedded JSON store:
# installs what is missing, builds, then serves /run/docker/plugins/tsnet.sock
# (override with TSNET_SOCKET, TSNET_STATE_DIR, ... see README).
set -eu
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "tsnet programs bridges and firewall rules: run it as root" >&2; exit 1; }
./scripts/ensure-deps.sh
[ -d node_modules ] || npm ci --no-audit --no-fund
[ -f dist/main.js ] && [ -z "$(find src -newer dist/main.js -name '*.ts' | head -1)" ] || npm run build --silent
exec node dist/main.js
