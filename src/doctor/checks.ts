// tsnetctl doctor's judgements: pure functions from what was read off the
// host (sysctls, iptables, the nftables table, links, etcd, the store) to
// findings, one line each with what to do. Reading is doctor.ts's job, so
// these are tested without a kernel.
import type { LinkInfo } from '../kernel/ip.js';
import { ALIAS_PREFIX, overlayNames, shortId } from '../kernel/names.js';
import { WG_IFACE } from '../wireguard/host.js';
import { chainNames, NETWORK_CHAIN } from '../firewall/nft.js';
import { CHAIN as TSNET_FORWARD } from '../firewall/iptables.js';
import type { NetnsDirReading } from '../kernel/netns-dir.js';
import type { NetworkRecord, State } from '../store/schema.js';
import type { HostHoldings } from '../cluster/registry.js';
import { peerWarning, type PeerReport } from '../routed/routes.js';

export type Level = 'ok' | 'warn' | 'fail';

export interface Finding {
  level: Level;
  /** which check: sysctl, forward, nftables, links, etcd, holders, vxlan, mtu, names, netns, store */
  check: string;
  message: string;
  /** what to do about it (absent when nothing needs doing) */
  fix?: string;
}

/** One line per finding; what to do follows on the same line, so grep shows both. */
export function formatFinding(f: Finding): string {
  const tag = { ok: 'ok  ', warn: 'WARN', fail: 'FAIL' }[f.level];
  return `${tag} ${f.check}: ${f.message}${f.fix ? ` -> ${f.fix}` : ''}`;
}

const ok = (check: string, message: string): Finding => ({ level: 'ok', check, message });
const warn = (check: string, message: string, fix: string): Finding => ({ level: 'warn', check, message, fix });
const fail = (check: string, message: string, fix: string): Finding => ({ level: 'fail', check, message, fix });

function label(n: NetworkRecord): string {
  return `network ${shortId(n.id)} (bridge ${n.bridge})`;
}

/** Forwarding must be on for non-internal networks of each family; br_netfilter sends bridged traffic through FORWARD. */
export function judgeSysctls(state: State, s: { ipForward?: string | undefined; ipv6Forwarding?: string | undefined; bridgeNfCall?: string | undefined }, forwardJump: boolean | undefined): Finding[] {
  const out: Finding[] = [];
  const nets = bridged(state).filter((n) => !n.internal);
  const v4 = nets.filter((n) => n.ipv4.length > 0);
  const v6 = nets.filter((n) => n.ipv6.length > 0);
  if (v4.length > 0 && s.ipForward !== '1') {
    out.push(fail('sysctl', `net.ipv4.ip_forward is ${s.ipForward ?? 'unreadable'}: containers of ${v4.length} network(s) cannot reach beyond their bridge, nor be reached through published ports`, 'sysctl -w net.ipv4.ip_forward=1, and keep it in /etc/sysctl.d/ so a reboot or another tool does not turn it off'));
  } else out.push(ok('sysctl', `net.ipv4.ip_forward is ${s.ipForward ?? '?'}`));
  if (v6.length > 0 && s.ipv6Forwarding !== '1') {
    out.push(fail('sysctl', `net.ipv6.conf.all.forwarding is ${s.ipv6Forwarding ?? 'unreadable'}: IPv6 of ${v6.length} network(s) is not routed`, 'sysctl -w net.ipv6.conf.all.forwarding=1, and keep it in /etc/sysctl.d/'));
  }
  if (s.bridgeNfCall === undefined) out.push(ok('sysctl', 'br_netfilter is not loaded: bridged traffic does not pass iptables'));
  else if (s.bridgeNfCall === '1' && nets.length > 0 && forwardJump === false) {
    out.push(fail('sysctl', `net.bridge.bridge-nf-call-iptables is 1, so traffic between containers on one bridge passes iptables FORWARD, and FORWARD has no jump to ${TSNET_FORWARD} to accept it`, 'tsnetctl reconcile puts the jump back'));
  } else out.push(ok('sysctl', `net.bridge.bridge-nf-call-iptables is ${s.bridgeNfCall}`));
  return out;
}

/**
 * dockerd's FORWARD chain (`iptables -S FORWARD`, undefined when iptables
 * is absent) and tsnet's chain (`iptables -S TSNET-FORWARD`).
 */
export function judgeForward(state: State, forward: string | undefined, tsnetChain: string | undefined): Finding[] {
  const nets = bridged(state).filter((n) => n.ipv4.length > 0 || n.ipv6.length === 0);
  if (forward === undefined) {
    return [ok('forward', nets.length === 0 ? 'no iptables FORWARD chain (no filter table yet)' : 'iptables is not in use here: no FORWARD policy to work around')];
  }
  const lines = forward.split('\n');
  const policy = /^-P FORWARD (\w+)/m.exec(forward)?.[1] ?? '?';
  const rules = lines.filter((l) => l.startsWith('-A FORWARD'));
  const ours = rules.indexOf(`-A FORWARD -j ${TSNET_FORWARD}`);
  const dockerUser = rules.indexOf('-A FORWARD -j DOCKER-USER');
  const out: Finding[] = [];
  if (dockerUser < 0) {
    out.push(warn('forward', `FORWARD policy ${policy}; dockerd's DOCKER-USER jump is missing (dockerd runs with --iptables=false, or its rules were flushed)`, 'restart dockerd to restore its chains; operators\' DOCKER-USER rules do not apply to tsnet traffic until then'));
  } else out.push(ok('forward', `FORWARD policy ${policy}, dockerd's chains in place`));
  if (nets.length === 0) return out;
  if (ours < 0) {
    out.push(fail('forward', `FORWARD has no jump to ${TSNET_FORWARD}${policy === 'DROP' ? ', and its policy DROP drops all traffic of tsnet networks leaving or entering their bridges' : ''}`, 'tsnetctl reconcile puts the jump back'));
    return out;
  }
  if (dockerUser >= 0 && ours < dockerUser) {
    out.push(warn('forward', `${TSNET_FORWARD} is jumped to before DOCKER-USER: operators' DOCKER-USER rules do not see tsnet traffic`, 'tsnetctl reconcile moves the jump after DOCKER-USER'));
  }
  const chain = tsnetChain ?? '';
  const missing = nets.filter((n) => !chain.includes(`-i ${n.bridge} `) || !chain.includes(`-o ${n.bridge} `));
  for (const n of missing) out.push(fail('forward', `${TSNET_FORWARD} has no ACCEPT for ${label(n)}: FORWARD's policy decides its traffic`, 'tsnetctl reconcile rewrites the chain'));
  if (missing.length === 0) out.push(ok('forward', `${TSNET_FORWARD} accepts traffic of all ${nets.length} network(s)`));
  return out;
}

/** The parts of `nft -j list table inet tsnet` the doctor reads. */
export interface NftReading {
  /** rules per chain */
  rules: Record<string, number>;
  /** map name -> keys (interface names) */
  maps: Record<string, string[]>;
}

export function parseNftJson(text: string): NftReading {
  const parsed = JSON.parse(text) as { nftables: Array<Record<string, { name?: string; chain?: string; elem?: unknown[] }>> };
  const r: NftReading = { rules: {}, maps: {} };
  for (const item of parsed.nftables) {
    if (item.chain?.name) r.rules[item.chain.name] ??= 0;
    if (item.rule?.chain) r.rules[item.rule.chain] = (r.rules[item.rule.chain] ?? 0) + 1;
    if (item.map?.name) {
      r.maps[item.map.name] = (item.map.elem ?? []).map((e) => (Array.isArray(e) && typeof e[0] === 'string' ? e[0] : '')).filter((k) => k !== '');
    }
  }
  return r;
}

export function judgeNft(state: State, table: NftReading | undefined): Finding[] {
  const nets = bridged(state);
  if (!table) {
    if (nets.length === 0) return [ok('nftables', 'no tsnet network, no tsnet table')];
    return [fail('nftables', `tsnet's nftables table inet tsnet is missing: ${nets.length} network(s) have no isolation, NAT or published ports`, 'tsnetctl reconcile rewrites the table from the store')];
  }
  const out: Finding[] = [];
  if (nets.length > 0 && (table.rules.forward ?? 0) < 2) {
    out.push(fail('nftables', `the table's forward chain has ${table.rules.forward ?? 0} rule(s) where tsnet keeps 2: it was flushed, so no network is isolated`, 'tsnetctl reconcile rewrites the table from the store'));
  }
  for (const n of nets) {
    const c = chainNames(shortId(n.id));
    const problems: string[] = [];
    for (const name of [c.out, c.in]) {
      if (!(name in table.rules)) problems.push(`chain ${name} missing`);
      else if (table.rules[name] === 0) problems.push(`chain ${name} empty`);
    }
    for (const [map, want] of [['fwd_out', c.out], ['fwd_in', c.in]] as const) {
      if (!(table.maps[map] ?? []).includes(n.bridge)) problems.push(`${map} does not send ${n.bridge} to ${want}`);
    }
    if (problems.length > 0) out.push(fail('nftables', `${label(n)}: ${problems.join('; ')}`, 'tsnetctl reconcile rewrites the network\'s rules'));
  }
  const known = new Set(nets.map((n) => shortId(n.id)));
  const stale = Object.keys(table.rules).filter((name) => NETWORK_CHAIN.test(name) && !known.has(name.slice(2, 14)));
  if (stale.length > 0) out.push(warn('nftables', `chains of networks the store does not have: ${stale.join(', ')}`, 'tsnetctl reconcile removes them'));
  if (out.length === 0) out.push(ok('nftables', `table inet tsnet matches the store (${nets.length} network(s))`));
  return out;
}

/** Networks on a bridge of tsnet's, with its firewall rules (LAN networks have neither). */
function bridged(state: State): State['networks'][string][] {
  return Object.values(state.networks).filter((n) => !n.lan);
}

/** Bridges, VXLAN ports and veths against the store; links tagged by tsnet that no record explains. */
export function judgeLinks(state: State, links: LinkInfo[]): Finding[] {
  const byName = new Map(links.map((l) => [l.ifname, l]));
  const out: Finding[] = [];
  const explained = new Set<string>();
  for (const n of Object.values(state.networks)) {
    explained.add(n.bridge);
    if (n.lan) {
      // A LAN network's device is its parent; its children live in the containers, out of sight.
      for (const own of [n.lan.shim, n.lan.parentPeer]) if (own) explained.add(own);
      const parent = byName.get(n.lan.parent);
      if (!parent) out.push(fail('links', `network ${shortId(n.id)}: parent ${n.lan.parent} is missing; its containers are off the LAN`, n.lan.createdParent ? 'tsnetctl reconcile re-creates it; restart the containers' : 'bring the interface back, then restart the containers'));
      else if (n.lan.shim && !byName.has(n.lan.shim)) out.push(fail('links', `network ${shortId(n.id)}: host access shim ${n.lan.shim} is missing`, 'tsnetctl reconcile re-creates it'));
      continue;
    }
    const br = byName.get(n.bridge);
    if (!br) {
      out.push(fail('links', `${label(n)}: the bridge is missing; its containers are cut off`, 'tsnetctl reconcile re-creates it and re-attaches the containers'));
      continue;
    }
    if (!br.flags.includes('UP')) out.push(fail('links', `${label(n)}: the bridge is down`, 'tsnetctl reconcile brings it up'));
    if (br.mtu !== n.mtu) out.push(warn('links', `${label(n)}: bridge MTU ${br.mtu}, the network's is ${n.mtu}`, 'tsnetctl reconcile sets it back'));
    if (n.overlay) {
      explained.add(n.overlay.vxlan);
      const gw = overlayNames(n.id);
      explained.add(gw.gatewayHost).add(gw.gatewayPort);
      const vx = byName.get(n.overlay.vxlan);
      if (!vx) out.push(fail('links', `${label(n)}: VXLAN port ${n.overlay.vxlan} is missing; no traffic reaches other hosts`, 'tsnetctl reconcile re-creates it'));
      else if (vx.master !== n.bridge) out.push(fail('links', `${label(n)}: VXLAN port ${n.overlay.vxlan} is not on the bridge`, 'tsnetctl reconcile attaches it'));
      if (n.overlay.encrypted) {
        // The host's one WireGuard interface carries every encrypted overlay.
        if (!explained.has(WG_IFACE) && !byName.has(WG_IFACE)) out.push(fail('links', `${label(n)}: the WireGuard interface ${WG_IFACE} is missing (wireguard-go gone?); the overlay reaches no other host`, 'tsnetctl reconcile makes it again'));
        explained.add(WG_IFACE);
      }
    }
  }
  for (const e of Object.values(state.endpoints)) {
    explained.add(e.hostVeth);
    const n = state.networks[e.networkId];
    if (n?.lan) continue;
    const v = byName.get(e.hostVeth);
    if (!v) out.push(fail('links', `endpoint ${shortId(e.id)}: host veth ${e.hostVeth} is missing (its container lost the link)`, 'restart the container (docker restart); tsnetctl reconcile drops the stale record'));
    else if (n && v.master !== n.bridge) out.push(fail('links', `endpoint ${shortId(e.id)}: veth ${e.hostVeth} is not on ${n.bridge}`, 'tsnetctl reconcile re-attaches it'));
  }
  const orphans = links.filter((l) => l.ifalias?.startsWith(ALIAS_PREFIX) && !explained.has(l.ifname)).map((l) => l.ifname);
  if (orphans.length > 0) out.push(warn('links', `links tagged by tsnet that the store does not know: ${orphans.join(', ')}`, 'tsnetctl reconcile removes them'));
  if (out.length === 0) out.push(ok('links', `${Object.keys(state.networks).length} bridge(s) and ${Object.keys(state.endpoints).length} veth(s) match the store`));
  return out;
}

/** An overlay's bridge MTU plus the VXLAN headers must fit the underlay's MTU. */
export function judgeMtu(state: State, underlay: { dev: string; mtu: number; overhead: number } | string | undefined): Finding[] {
  const overlays = Object.values(state.networks).filter((n) => n.overlay);
  if (overlays.length === 0) return [];
  if (typeof underlay === 'string' || underlay === undefined) return [fail('mtu', `cannot tell the underlay: ${underlay ?? 'unknown'}`, 'set TSNET_ADVERTISE_ADDR to this host\'s underlay address')];
  const out: Finding[] = [];
  for (const n of overlays) {
    // An encrypted overlay's VXLAN runs inside WireGuard, whose MTU (TSNET_WG_MTU) may exceed the underlay's on purpose.
    if (n.overlay?.encrypted) continue;
    if (n.mtu + underlay.overhead > underlay.mtu) {
      out.push(fail('mtu', `${label(n)}: MTU ${n.mtu} + ${underlay.overhead} bytes of VXLAN headers exceeds the underlay ${underlay.dev}'s ${underlay.mtu}: full-size packets between hosts are dropped`, `re-create the network with -o com.docker.network.driver.mtu=${underlay.mtu - underlay.overhead}`));
    }
  }
  if (out.length === 0) out.push(ok('mtu', `${overlays.length} overlay(s) fit the underlay ${underlay.dev} (MTU ${underlay.mtu})`));
  return out;
}

export interface PeerProbe {
  networkId: string;
  peer: string;
  /** the peer answered an echo request on the underlay; undefined: no ping here to ask with */
  answers: boolean | undefined;
}

/**
 * VXLAN between this host and its peers: the VXLAN port listens on the
 * configured UDP port, tsnet's guard for it is in, each peer answers on the
 * underlay.
 */
export function judgeVxlan(state: State, port: number, ports: Record<string, number | undefined>, guard: boolean, probes: PeerProbe[]): Finding[] {
  const overlays = Object.values(state.networks).filter((n) => n.overlay);
  if (overlays.length === 0) return [];
  const out: Finding[] = [];
  for (const n of overlays) {
    const p = ports[n.overlay!.vxlan];
    if (p !== undefined && p !== port) out.push(fail('vxlan', `${label(n)}: VXLAN port ${n.overlay!.vxlan} uses UDP ${p}, tsnet is configured for ${port}`, 'set TSNET_VXLAN_PORT alike on every host, then tsnetctl reconcile'));
  }
  if (!guard) out.push(fail('vxlan', `the nftables guard for UDP ${port} (chain vxlan_in) is missing: any host may inject packets into overlays`, 'tsnetctl reconcile puts it back'));
  for (const pr of probes) {
    if (pr.answers === undefined) out.push(warn('vxlan', `network ${shortId(pr.networkId)}: cannot probe peer ${pr.peer} (no ping program here)`, `ping ${pr.peer} from this host`));
    else if (!pr.answers) out.push(warn('vxlan', `network ${shortId(pr.networkId)}: peer ${pr.peer} does not answer on the underlay; VXLAN to and from it (UDP ${port}) cannot work`, `check the route to ${pr.peer} and that firewalls between the hosts pass UDP ${port}`));
  }
  if (out.length === 0) out.push(ok('vxlan', `UDP ${port} in place; ${probes.length} peer(s) answer on the underlay`));
  return out;
}

export function judgeEtcd(configured: boolean, health: { reachable: boolean; leaseAlive: boolean; error?: string } | undefined): Finding[] {
  if (!configured) return [];
  if (!health || !health.reachable) return [fail('etcd', `etcd is unreachable${health?.error ? ` (${health.error})` : ''}: cluster overlays cannot lease address blocks or learn of new endpoints`, 'check TSNET_ETCD_ENDPOINTS and that etcd runs; tsnet re-registers by itself once it answers')];
  if (!health.leaseAlive) return [fail('etcd', 'etcd answers but this host\'s lease key is gone: other hosts no longer see this host\'s endpoints', 'tsnet re-registers within seconds; if this stays, restart tsnet')];
  return [ok('etcd', 'etcd reachable; this host\'s lease is alive')];
}

/**
 * Hosts with no lease that still hold address blocks or static addresses:
 * stopped for a while, or gone for good, which only an operator knows.
 */
export function judgeHolders(holders: readonly HostHoldings[]): Finding[] {
  const dead = holders.filter((h) => !h.alive);
  if (dead.length === 0) return holders.length > 0 ? [ok('holders', `every host holding addresses in etcd is alive (${holders.length})`)] : [];
  return dead.map((h) => {
    const blocks = h.networks.reduce((n, x) => n + x.blocks.length, 0);
    const claims = h.networks.reduce((n, x) => n + x.claims.length, 0);
    return warn(
      'holders',
      `host ${h.host} has no lease (its tsnet is stopped, or the host is gone) and holds ${blocks} address block(s) and ${claims} static address(es) of ${h.networks.map((x) => x.subnet).join(', ')}`,
      `if it is gone for good: tsnetctl forget-host ${h.host} (its addresses are then handed out elsewhere); if it is coming back, nothing`,
    );
  });
}

/**
 * Names across hosts: is dockerd followed (else this host's containers'
 * names are not learned), and does DNS answer on every cluster overlay's
 * gateway address? `names` is undefined when both are turned off.
 */
export function judgeNames(
  names: { dockerd: { socket: string; connected: boolean; lastError?: string } | null; dns: { enabled: boolean; listening: Array<{ address: string; network: string; udp: boolean; tcp: boolean; error?: string }> } } | undefined,
  clusterOverlays: number,
): Finding[] {
  if (!names) return [];
  const out: Finding[] = [];
  const d = names.dockerd;
  if (d && !d.connected) {
    out.push(warn('names', `dockerd's Engine API at ${d.socket} is not answering${d.lastError ? ` (${d.lastError})` : ''}: names of this host's new containers are not learned`, 'check that dockerd runs and TSNET_DOCKER_HOST (managed plugin: docker.source) names its socket; tsnet reconnects by itself'));
  }
  for (const l of names.dns.listening) {
    if (!l.udp || !l.tcp) out.push(fail('names', `no DNS on ${l.address}:53 for network ${l.network.slice(0, 12)}${l.error ? ` (${l.error})` : ''}: containers pointed there resolve nothing`, 'another server may hold port 53 on that address (ss -lunp); tsnet retries every 10 s'));
  }
  if (out.length === 0 && (d || clusterOverlays > 0)) {
    out.push(ok('names', `${d ? `following dockerd at ${d.socket}` : 'not following dockerd (TSNET_DOCKER_HOST=off)'}; DNS on ${names.dns.listening.length} overlay gateway address(es)`));
  }
  return out;
}

export function judgeStore(s: { source: string; problems: string[]; hold: string | undefined; lastWriteError: string | undefined; writeFailures: number }): Finding[] {
  const out: Finding[] = [];
  if (s.hold) out.push(fail('store', `address allocation is paused: ${s.hold}`, 'check the networks and containers, then tsnetctl accept-state'));
  if (s.lastWriteError) out.push(fail('store', `the last state write failed: ${s.lastWriteError}`, 'check the state directory\'s disk (space, read-only mount)'));
  else if (s.writeFailures > 0) out.push(warn('store', `${s.writeFailures} state write(s) failed since start-up; the last one succeeded`, 'check the state directory\'s disk'));
  if (s.source === 'recovered') out.push(warn('store', `state.json was damaged at start-up and rebuilt with nothing lost (${s.problems.join('; ')})`, 'look at the .bad file beside it and the disk it is on'));
  if (out.length === 0) out.push(ok('store', `${s.source === 'empty' ? 'started with an empty store' : 'state loaded intact'}; writes succeed`));
  return out;
}

/**
 * The managed plugin's /run/netns (TSNET_NETNS_DIR): it must lead into the
 * host's /run, on a mount that sends its mounts to the host's. Anything
 * else names overlay namespaces in the plugin's own mount namespace, and
 * they end with it: a disable, an upgrade or a dockerd restart then takes
 * every overlay container's link. "shared" is all that can be seen from
 * inside; the host's side of it is shared on systemd hosts.
 */
export function judgeNetnsDir(r: NetnsDirReading, overlays: number): Finding[] {
  const bad = overlays > 0 ? fail : warn;
  const stake = overlays > 0 ? `, taking the links of ${overlays} overlay network(s)' containers with them` : '';
  if (r.leadsTo !== r.dir) {
    return [bad('netns', `/run/netns leads to ${r.leadsTo ?? 'nothing'}, not to ${r.dir} (TSNET_NETNS_DIR)`, "create the plugin again from its bundle: the rootfs's /run/netns and config.json's TSNET_NETNS_DIR must agree")];
  }
  if (!r.mount) return [bad('netns', `no mount holds ${r.dir} in /proc/self/mountinfo`, 'see tsnet\'s log')];
  const where = `${r.dir} is on ${r.mount.mountPoint}`;
  if (r.mount.propagation === 'slave') {
    return [bad('netns', `${where}, a slave mount: namespaces named there stay in the plugin's mount namespace and end when the plugin stops${stake}`, 'dockerd gives a plugin rshared root propagation only when its manifest has a propagatedmount: use config.json of this version')];
  }
  if (r.mount.propagation === 'private') {
    return [bad('netns', `${where}, a private mount: namespaces named there end when the plugin stops${stake}`, "make the host's /run a shared mount of its own (mount --make-rshared /run; systemd does so at boot), then disable and enable the plugin")];
  }
  return [ok('netns', `${where}, a shared mount: overlay namespaces named there reach the host's /run/netns and outlive the plugin`)];
}

export interface RoutedReading {
  net: NetworkRecord;
  /** the bridge's proxy_arp / proxy_ndp, and forwarding of each family, as read */
  proxyArp: string | undefined;
  proxyNdp: string | undefined;
  ipForward: string | undefined;
  ipv6Forwarding: string | undefined;
  /** the runtime's view of the other hosts; undefined until it had one (etcd not answered yet) */
  peers: PeerReport[] | undefined;
}

/**
 * Networks routed across hosts (tsnet.mode=routed, overlays with
 * tsnet.backend=auto): the bridge must answer for other hosts' containers,
 * forwarding must be on (also for --internal), and every peer should be
 * routable; one that is not (off the LAN, no address of the family) is
 * reported with what to do.
 */
export function judgeRouted(readings: readonly RoutedReading[]): Finding[] {
  const out: Finding[] = [];
  for (const r of readings) {
    const n = r.net;
    if (n.ipv4.length > 0 && (r.proxyArp !== '1' || r.ipForward !== '1')) {
      out.push(fail('routed', `${label(n)}: proxy_arp ${r.proxyArp ?? '?'}, ip_forward ${r.ipForward ?? '?'}: containers cannot reach the other hosts' containers`, 'tsnetctl reconcile sets them again'));
    }
    if (n.ipv6.length > 0 && (r.proxyNdp !== '1' || r.ipv6Forwarding !== '1')) {
      out.push(fail('routed', `${label(n)}: proxy_ndp ${r.proxyNdp ?? '?'}, IPv6 forwarding ${r.ipv6Forwarding ?? '?'}: IPv6 to the other hosts' containers fails`, 'tsnetctl reconcile sets them again'));
    }
    if (r.peers === undefined) {
      out.push(warn('routed', `${label(n)}: no view of the other hosts yet`, 'check etcd (tsnetctl doctor\'s etcd line); routes in place are kept meanwhile'));
      continue;
    }
    const skipped = r.peers.filter((p) => p.status !== 'routed');
    for (const p of skipped) {
      out.push(warn('routed', `${label(n)}: ${peerWarning(p)}`, p.status === 'off-lan' ? 'put the host on this LAN, or use an overlay with -o tsnet.backend=auto for hosts beyond it' : 'give the host\'s LAN interface an address of that family'));
    }
    const routed = r.peers.filter((p) => p.status === 'routed');
    if (skipped.length === 0) out.push(ok('routed', `${label(n)}: ${routed.length} peer route set(s) in place, the bridge answers for them`));
  }
  return out;
}
