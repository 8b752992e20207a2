#!/bin/sh
# Fetch a modern dockerd for the test lab without installing it: Debian 13's
# docker.io and docker-cli (26.1.x) run on Debian 12, so apt downloads the two
# .deb files from trixie with a sources list, state and cache of its own (the
# machine's apt set-up is neither read nor changed) and dpkg-deb unpacks them
# into a private directory. Nothing is configured or started; the lab picks
# the binaries from there when TSNET_LAB_DOCKERD=26 (test/helpers/lab.ts).
#   fetch-dockerd.sh [DIR]    default $TSNET_DOCKERD26_DIR or /opt/tsnet-test/docker-26
# Idempotent: a complete DIR (its dockerd runs) is left as it is. containerd,
# runc and tini stay Debian 12's (docker.io 26 asks for containerd >= 1.4).
set -eu

dir=${1:-${TSNET_DOCKERD26_DIR:-/opt/tsnet-test/docker-26}}
suite=trixie
mirror=${TSNET_DEBIAN_MIRROR:-http://deb.debian.org/debian}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
# The lab's API version and flags are written for 26.1; a later trixie
# update of another series must be looked at before the lab uses it.
want_series=26.1.

complete() { [ -x "$1/usr/sbin/dockerd" ] && [ -x "$1/usr/sbin/docker-proxy" ] && [ -x "$1/usr/bin/docker" ] && "$1/usr/sbin/dockerd" --version >/dev/null 2>&1; }
complete "$dir" && exit 0

[ "$(id -u)" = 0 ] || { echo "run as root: fetch-dockerd.sh writes $dir" >&2; exit 1; }
grep -q "13/trixie" "$keyring" 2>/dev/null || {
  # The key's user ID is stored in clear in the keyring file.
  echo "fetch-dockerd.sh: $keyring has no Debian 13 (trixie) key; upgrade debian-archive-keyring" >&2
  exit 1
}
mkdir -p "$(dirname "$dir")"
# Two test runs starting at once: one fetches, the other waits for it.
exec 9>"$dir.lock"
flock 9
complete "$dir" && exit 0

work=$(mktemp -d "$dir.work.XXXXXX")
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/etc/sources.list.d" "$work/etc/preferences.d" "$work/state/lists/partial" "$work/cache/archives/partial" "$work/debs" "$work/root"
echo "deb [signed-by=$keyring] $mirror $suite main" >"$work/etc/sources.list"
# Every apt path that could point at the machine's set-up points into $work;
# an empty dpkg status makes apt resolve against nothing installed here.
: >"$work/status"
set -- \
  -o "Dir::Etc::SourceList=$work/etc/sources.list" \
  -o "Dir::Etc::SourceParts=$work/etc/sources.list.d" \
  -o "Dir::Etc::Preferences=$work/etc/preferences" \
  -o "Dir::Etc::PreferencesParts=$work/etc/preferences.d" \
  -o "Dir::State=$work/state" \
  -o "Dir::State::status=$work/status" \
  -o "Dir::Cache=$work/cache" \
  -o "APT::Sandbox::User=root" \
  -o "Debug::NoLocking=1"
log="$work/apt.log"
if ! apt-get "$@" -q update >"$log" 2>&1; then
  tail -20 "$log" >&2
  echo "fetch-dockerd.sh: apt-get update from $mirror $suite failed" >&2
  exit 1
fi
version=$(apt-cache "$@" show --no-all-versions docker.io 2>/dev/null | sed -n 's/^Version: //p' | head -1)
case "$version" in
  "$want_series"*|*:"$want_series"*) ;;
  *) echo "fetch-dockerd.sh: $suite's docker.io is ${version:-missing}, not $want_series*" >&2; exit 1 ;;
esac
if ! (cd "$work/debs" && apt-get "$@" -q download "docker.io=$version" "docker-cli=$version") >"$log" 2>&1; then
  tail -20 "$log" >&2
  echo "fetch-dockerd.sh: downloading docker.io $version failed" >&2
  exit 1
fi
for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$work/root"; done
complete "$work/root" || { echo "fetch-dockerd.sh: the unpacked dockerd $version does not run here" >&2; exit 1; }
echo "$version" >"$work/root/VERSION"
rm -rf "$dir"
mv "$work/root" "$dir"
echo "dockerd $version unpacked in $dir" >&2
