// What a host wants in its kernel for a network routed across hosts, as
// pure functions of the peers it knows: routes, proxy-NDP entries, the
// sources its firewall admits from the LAN, and the ip -batch lines that
// get the kernel there. Design notes (after flannel's host-gw backend):
// - Each other host's block: `BLOCK via PEER dev LANDEV proto 116`. The
//   protocol number tags tsnet's routes, so tsnet finds and removes exactly
//   its own (`ip route show proto 116`). Give it a name with
//   `echo '116 tsnet' > /etc/iproute2/rt_protos.d/tsnet.conf` if you like;
//   tsnet reads numbers and never writes /etc.
// - A next hop must be on a directly connected subnet of this host: a route
//   via a router would hand the containers' traffic to a box with no route
//   back. Such a peer is reported (log, tsnetctl status) and skipped, never
//   routed somewhere silently.
// - Containers get the whole subnet's prefix from dockerd, so to them every
//   other host's container is on-link and they ask for its MAC. The bridge
//   answers for those (IPv4: proxy_arp, which answers only for addresses
//   routed out of another interface, so local containers answer for
//   themselves; IPv6: proxy NDP, which Linux does per address only, so every
//   address of a remote IPv6 block gets an entry: 64 per cluster block).
// - Whatever comes from etcd is checked here before it can reach a route:
//   a block outside the network's subnet, or an address that does not
//   parse, is ignored (and reported), never routed.
import type { MemberInfo, NetworkView } from '../cluster/registry.js';
import { TsnetError } from '../errors.js';
import { batchLine } from '../kernel/ip.js';
import { parseBlockKey } from '../net/blocks.js';
import { contains, containsPrefix, formatIp, formatPrefix, lastAddress, parseIp, parsePrefix, prefixSize, width, type Prefix } from '../net/cidr.js';

/** The route protocol tsnet tags its routes with (rt_protos: unassigned, below the routing daemons' 186+). */
export const ROUTE_PROTO = 116;

/** Largest IPv6 block tsnet proxies NDP for, one entry per address. */
export const MAX_PROXIED = 4096n;

export interface RoutedPeer {
  /** the host's ID in etcd, or its address (static peers) */
  host: string;
  addr4?: string | undefined;
  addr6?: string | undefined;
  /** the blocks it holds, and single addresses it claimed in other blocks */
  prefixes: Prefix[];
}

export interface ConnectedPrefix {
  dev: string;
  prefix: Prefix;
}

export type PeerStatus = 'routed' | 'off-lan' | 'no-address';

export interface PeerReport {
  host: string;
  family: 4 | 6;
  address: string | null;
  prefixes: string[];
  status: PeerStatus;
  /** via this interface (routed peers) */
  dev?: string;
}

export interface RouteTarget {
  via: string;
  dev: string;
}

/** A route's target: a peer, or this host's bridge (an address of its own inside another host's block). */
export type RouteValue = RouteTarget | 'local';

export interface Desired {
  routes: Map<string, RouteValue>;
  proxy6: Set<string>;
  sources4: string[];
  sources6: string[];
  peers: PeerReport[];
}

/** The connected (on-link) prefixes of this host's interfaces, from `ip -json addr`. */
export function connectedPrefixes(addrs: ReadonlyArray<{ ifname: string; addr_info: ReadonlyArray<{ family: string; local: string; prefixlen: number; scope?: string }> }>, skip: (ifname: string) => boolean): ConnectedPrefix[] {
  const out: ConnectedPrefix[] = [];
  for (const l of addrs) {
    if (l.ifname === 'lo' || skip(l.ifname)) continue;
    for (const a of l.addr_info) {
      if (a.scope !== undefined && a.scope !== 'global') continue;
      const p = parsePrefix(`${a.local}/${a.prefixlen}`, false);
      if (!p || p.bits === width(p.v6)) continue;
      out.push({ dev: l.ifname, prefix: p });
    }
  }
  return out;
}

/** The interface through which an address is directly reachable (longest prefix), if any. */
export function onLink(address: string, connected: readonly ConnectedPrefix[]): ConnectedPrefix | undefined {
  const ip = parseIp(address);
  if (!ip) return undefined;
  let best: ConnectedPrefix | undefined;
  for (const c of connected) if (contains(c.prefix, ip) && (!best || c.prefix.bits > best.prefix.bits)) best = c;
  return best;
}

/** Drop prefixes contained in others (an interval set refuses overlapping elements). */
export function collapse(prefixes: readonly Prefix[]): Prefix[] {
  const sorted = [...prefixes].sort((a, b) => a.bits - b.bits || (a.base < b.base ? -1 : a.base > b.base ? 1 : 0));
  const kept: Prefix[] = [];
  for (const p of sorted) if (!kept.some((k) => containsPrefix(k, p))) kept.push(p);
  return kept.sort((a, b) => (a.base < b.base ? -1 : a.base > b.base ? 1 : 0));
}

function addressOf(m: MemberInfo, family: 4 | 6): string | undefined {
  const given = family === 4 ? m.addr4 : m.addr6;
  const valid = (a: unknown): a is string => typeof a === 'string' && parseIp(a)?.v6 === (family === 6);
  if (valid(given)) return given;
  return valid(m.vtep) ? m.vtep : undefined;
}

export interface ViewPeers {
  peers: Map<string, RoutedPeer>;
  /** addresses this host claimed inside other hosts' blocks */
  ownClaims: Prefix[];
  /** what etcd holds that cannot be routed (outside the subnet, unparsable), for the log */
  ignored: string[];
}

/**
 * The other hosts of a network as etcd shows them: the blocks they hold and
 * the addresses they claimed, for members only (a host whose lease expired
 * keeps its blocks in etcd, but is not routed to).
 */
export function peersFromView(view: NetworkView, me: string | undefined, subnets: readonly Prefix[]): ViewPeers {
  const peers = new Map<string, RoutedPeer>();
  const ownClaims: Prefix[] = [];
  const ignored: string[] = [];
  const inSubnet = (p: Prefix): boolean => subnets.some((s) => containsPrefix(s, p));
  const peerOf = (host: string): RoutedPeer | undefined => {
    const m = view.members.get(host);
    if (!m || typeof m !== 'object') return undefined;
    let p = peers.get(host);
    if (!p) peers.set(host, (p = { host, addr4: addressOf(m, 4), addr6: addressOf(m, 6), prefixes: [] }));
    return p;
  };
  for (const [key, owner] of view.blocks) {
    if (owner?.host === me) continue;
    const p = parseBlockKey(key);
    if (!p || !inSubnet(p) || typeof owner?.host !== 'string') {
      ignored.push(`block ${key}`);
      continue;
    }
    peerOf(owner.host)?.prefixes.push(p);
  }
  for (const [text, claim] of view.claims) {
    if (claim?.state !== 'ok') continue;
    const ip = parseIp(text);
    const p = ip ? { v6: ip.v6, base: ip.value, bits: width(ip.v6) } : undefined;
    if (!p || !inSubnet(p)) {
      ignored.push(`claim ${text}`);
      continue;
    }
    if (claim.host === me) ownClaims.push(p);
    else if (typeof claim.host === 'string') peerOf(claim.host)?.prefixes.push(p);
  }
  for (const [host, p] of peers) if (p.prefixes.length === 0) peers.delete(host);
  return { peers, ownClaims, ignored };
}

/**
 * Routes, proxy entries and admitted sources for these peers. `local` are
 * addresses living on this host's bridge although inside a peer's block
 * (its static claims): they are routed to the bridge, not proxied.
 */
export function desiredState(peers: Iterable<RoutedPeer>, connected: readonly ConnectedPrefix[], local: readonly Prefix[] = []): Desired {
  const routes = new Map<string, RouteValue>();
  const proxy6 = new Set<string>();
  const routed: Prefix[] = [];
  const reports: PeerReport[] = [];
  for (const peer of peers) {
    for (const family of [4, 6] as const) {
      const prefixes = peer.prefixes.filter((p) => p.v6 === (family === 6));
      if (prefixes.length === 0) continue;
      const address = (family === 4 ? peer.addr4 : peer.addr6) ?? null;
      const base = { host: peer.host, family, address, prefixes: prefixes.map(formatPrefix) };
      if (!address) {
        reports.push({ ...base, status: 'no-address' });
        continue;
      }
      const via = onLink(address, connected);
      if (!via) {
        reports.push({ ...base, status: 'off-lan' });
        continue;
      }
      reports.push({ ...base, status: 'routed', dev: via.dev });
      for (const p of prefixes) {
        routes.set(formatPrefix(p), { via: address, dev: via.dev });
        routed.push(p);
        if (p.v6 && prefixSize(p) <= MAX_PROXIED) for (let v = p.base; v <= lastAddress(p); v++) proxy6.add(formatIp({ v6: true, value: v }));
      }
    }
  }
  for (const l of local) {
    if (!routed.some((r) => containsPrefix(r, l))) continue;
    routes.set(formatPrefix(l), 'local');
    if (l.v6) for (let v = l.base; v <= lastAddress(l); v++) proxy6.delete(formatIp({ v6: true, value: v }));
  }
  const sources = collapse(routed);
  return {
    routes,
    proxy6,
    sources4: sources.filter((p) => !p.v6).map(formatPrefix),
    sources6: sources.filter((p) => p.v6).map(formatPrefix),
    peers: reports.sort((a, b) => a.host.localeCompare(b.host) || a.family - b.family),
  };
}

function same(a: RouteValue | undefined, b: RouteValue): boolean {
  if (a === undefined) return false;
  if (a === 'local' || b === 'local') return a === b;
  return a.via === b.via && a.dev === b.dev;
}

/** `ip -batch` lines turning the routes and proxy entries `have` into `want`: removals first. */
export function routeLines(bridge: string, have: { routes: ReadonlyMap<string, RouteValue>; proxy6: ReadonlySet<string> }, want: { routes: ReadonlyMap<string, RouteValue>; proxy6: ReadonlySet<string> }): string[] {
  const lines: Array<Array<string | number>> = [];
  for (const a of have.proxy6) if (!want.proxy6.has(a)) lines.push(['neigh', 'del', 'proxy', a, 'dev', bridge]);
  for (const dst of have.routes.keys()) if (!want.routes.has(dst)) lines.push(['route', 'del', dst, 'proto', ROUTE_PROTO]);
  for (const [dst, v] of want.routes) {
    if (same(have.routes.get(dst), v)) continue;
    if (!parsePrefix(dst)) throw new TsnetError('TSNET_ERR_INTERNAL', `not a CIDR: ${JSON.stringify(dst)}`);
    lines.push(v === 'local' ? ['route', 'replace', dst, 'dev', bridge, 'proto', ROUTE_PROTO] : ['route', 'replace', dst, 'via', v.via, 'dev', v.dev, 'proto', ROUTE_PROTO]);
  }
  for (const a of want.proxy6) if (!have.proxy6.has(a)) lines.push(['neigh', 'replace', 'proxy', a, 'dev', bridge]);
  return lines.map(batchLine);
}

/** Why a peer's blocks are not routed, for the log, tsnetctl status and doctor. */
export function peerWarning(p: PeerReport): string {
  const what = `${p.prefixes.join(', ')} of host ${p.host}`;
  if (p.status === 'no-address') return `${what} not routed: the host publishes no IPv${p.family} address to route them through (is its LAN interface dual-stack?)`;
  return `${what} not routed: ${p.address} is not on a directly connected subnet of this host, and routed networks reach only hosts on the same LAN (an overlay with tsnet.backend=auto reaches the others over VXLAN)`;
}
