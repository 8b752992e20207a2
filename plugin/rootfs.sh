#!/bin/sh
# Run by the Dockerfile's "system" stage: make sure the tools tsnet runs are
# installed (apt-get only if the base lacks them: a base made without a
# registry has them already), then copy node, those tools, the shared
# libraries they load and the few files they read into $1, the root of the
# final image. Nothing else of the base (apt, dpkg, perl, docs, locales)
# reaches the plugin.
set -eu
out=$1
tools="ip bridge nft iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore conntrack flock nsenter cat tee sh wg wireguard-go"

missing=
for t in $tools; do command -v "$t" >/dev/null 2>&1 || missing="$missing $t"; done
if [ -n "$missing" ]; then
	echo "installing (missing:$missing)"
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iproute2 nftables iptables util-linux conntrack wireguard-tools wireguard-go
	rm -rf /var/lib/apt/lists/*
fi

mkdir -p "$out"
# merged /usr: keep /bin -> usr/bin and friends as they are.
for d in bin sbin lib lib32 lib64 libx32; do
	if [ -L "/$d" ]; then
		cp -a "/$d" "$out/"
		mkdir -p "$out/$(readlink "/$d")"
	fi
done

# Copy a path and, if it is a symlink, every link of its chain
# (/usr/sbin/iptables -> /etc/alternatives/iptables -> xtables-nft-multi).
copy() {
	p=$1
	while :; do
		mkdir -p "$out$(dirname "$p")"
		[ -e "$out$p" ] || [ -L "$out$p" ] || cp -a "$p" "$out$p"
		[ -L "$p" ] || break
		t=$(readlink "$p")
		case $t in /*) p=$t ;; *) p=$(dirname "$p")/$t ;; esac
	done
}

# Every shared library a file needs, the dynamic loader included.
libs() {
	ldd "$1" 2>/dev/null | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }'
}

node=$(command -v node)
mkdir -p "$out/usr/local/bin"
cp "$(readlink -f "$node")" "$out/usr/local/bin/node"
files="$node"
for t in $tools; do
	copy "$(command -v "$t")"
	files="$files $(command -v "$t")"
done
# iptables loads its matches and targets with dlopen.
for d in /usr/lib/*/xtables /usr/lib/xtables; do
	[ -d "$d" ] || continue
	copy "$d"
	files="$files $(ls "$d"/*.so)"
done
for f in $files; do
	for l in $(libs "$f"); do copy "$l"; done
done

# Files the tools read: routing tables, protocol names, the loader cache.
for f in /etc/iproute2 /usr/share/iproute2 /etc/protocols /etc/services /etc/ethertypes /etc/nsswitch.conf /etc/ld.so.conf /etc/ld.so.conf.d /etc/ld.so.cache; do
	if [ -e "$f" ]; then copy "$f"; fi
done
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$out/etc/passwd"
printf 'root:x:0:\n' >"$out/etc/group"
mkdir -p "$out/tmp" "$out/root" "$out/run/docker/plugins" "$out/var/lib/tsnet" "$out/host/proc/sys/net" "$out/host/run" "$out/host/propagated" "$out/app"
# ip netns knows only /run/netns: here it leads into the host's /run (the
# manifest's run mount), where tsnet makes the directory at start-up
# (TSNET_NETNS_DIR), so the host's /run/netns need not exist at enable.
ln -s /host/run/netns "$out/run/netns"
chmod 1777 "$out/tmp"
chmod 700 "$out/root"

# The copy must run: fail the build here rather than at plugin enable.
for c in 'node -e 0' 'ip -V' 'bridge -V' 'nft --version' 'conntrack --version' 'flock --version' 'nsenter --version' 'cat --version' 'tee --version' \
	'iptables --version' 'iptables-save --version' 'iptables-restore --version' \
	'ip6tables --version' 'ip6tables-save --version' 'ip6tables-restore --version' 'wg --version' 'wireguard-go --version'; do
	chroot "$out" /bin/sh -c "$c" >/dev/null 2>&1 || {
		echo "rootfs.sh: '$c' does not run in the copied root" >&2
		exit 1
	}
done
du -sh "$out"
