#!/bin/sh
# Install the Debian packages tsnet needs, and only those that are missing.
#   ensure-deps.sh          what the plugin itself runs (ip, nft, iptables, flock, conntrack)
#   ensure-deps.sh --test   plus what the test lab runs (dockerd, busybox, ping, curl, etcd, iperf3),
#                           and dockerd 26 unpacked beside it (scripts/fetch-dockerd.sh)
# Package scripts must not start a Docker daemon in the machine's own network
# namespace (it would rewrite the host firewall), so a policy-rc.d refusing
# service starts is in place for the duration of the install.
set -eu

runtime="iproute2 iptables nftables util-linux conntrack procps wireguard-tools wireguard-go"
test_pkgs="docker.io busybox-static iputils-ping curl etcd-server etcd-client iperf3 debootstrap tcpdump"

want="$runtime"
[ "${1:-}" = "--test" ] && want="$want $test_pkgs"

# The lab's second dockerd; needs docker.io's dependencies (containerd, runc) first.
fetch_dockerd() {
  if [ "${1:-}" = "--test" ]; then "$(dirname "$0")/fetch-dockerd.sh"; fi
}

missing=""
for p in $want; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -z "$missing" ]; then
  fetch_dockerd "$@"
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  echo "missing Debian packages:$missing (run as root to install them)" >&2
  exit 1
fi

echo "installing Debian packages:$missing" >&2
created_policy=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  created_policy=1
fi
cleanup() { if [ -n "$created_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi; }
trap cleanup EXIT
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
# shellcheck disable=SC2086
if ! { apt-get update -q && apt-get install -y -q --no-install-recommends $missing; } >"$log" 2>&1; then
  tail -20 "$log" >&2
  rm -f "$log"
  echo "apt-get failed installing:$missing" >&2
  exit 1
fi
rm -f "$log"
fetch_dockerd "$@"
