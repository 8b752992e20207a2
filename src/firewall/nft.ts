// tsnet's own nftables table. Design notes:
// - tsnet owns `table inet tsnet` outright; nothing else is touched. Base
//   chains dispatch through verdict maps keyed by interface name, so adding a
//   network is "add chains + add map elements" and its cost does not grow
//   with the number of networks (no rule lists to scan, no handles to find).
// - The forward base chain runs at priority filter-1, before iptables'
//   FORWARD (dockerd's, policy DROP). Our drops are final whatever iptables
//   says; our accepts are not, which is why firewall/iptables.ts adds the
//   matching ACCEPTs to dockerd's FORWARD path.
// - Isolation uses `meta oifkind/iifkind "bridge"`: a tsnet network may talk
//   to the uplink but never to another bridge, be it tsnet's or Docker's, in
//   either direction. Docker's isolation chains only know Docker's bridges.
// - Every change is one `nft -f -` transaction: it applies whole or not at all.
// - Networks whose subnet spans hosts by routing (tsnet.mode=routed, overlays
//   with tsnet.backend=auto) also accept traffic from the LAN side whose
//   source is in another host's block of the subnet: a set per network and
//   family (r-<sid>-4, r-<sid>-6), whose elements the routed runtime keeps
//   in step with the cluster (routed-rules.ts). Declaring a network never
//   flushes them, so a reconcile keeps the peers it does not know yet. The
//   reverse-path check (fib saddr . iif) admits such a source only on the
//   interface this host routes that block through, so no local bridge can
//   pass for a peer host.
import type { Runner } from '../kernel/exec.js';
import { TsnetError } from '../errors.js';

export const TABLE = 'tsnet';

export interface NftNetwork {
  /** short network id, used in chain names */
  sid: string;
  bridge: string;
  internal: boolean;
  icc: boolean;
  /** source NAT towards the uplink, per family (Docker: masquerade option and not routed mode) */
  masquerade4: boolean;
  masquerade6: boolean;
  /** allow new connections from outside straight to container addresses, per family */
  directAccess4: boolean;
  directAccess6: boolean;
  subnets4: string[];
  subnets6: string[];
  /**
   * the subnet is one across hosts, each holding blocks routed to it: no
   * masquerade within the subnet, and other hosts' blocks (r-<sid>-4/6)
   * are admitted from the LAN side
   */
  routed?: boolean;
}

/** The sets of other hosts' blocks a routed network admits from the LAN side. */
export function peerSets(sid: string): { v4: string; v6: string } {
  safe(sid);
  return { v4: `r-${sid}-4`, v6: `r-${sid}-6` };
}

export const PEER_SET = /^r-[0-9a-f]{12}-[46]$/;

/** Declare a routed network's peer sets; keeps their elements. */
export function renderPeerSetDecl(sid: string): string[] {
  const t = `inet ${TABLE}`;
  const s = peerSets(sid);
  return [`add set ${t} ${s.v4} { type ipv4_addr; flags interval; }`, `add set ${t} ${s.v6} { type ipv6_addr; flags interval; }`];
}

const SAFE = /^[A-Za-z0-9_.:/-]+$/;

function safe(token: string): string {
  if (!SAFE.test(token)) throw new TsnetError('TSNET_ERR_INTERNAL', `unsafe nft token ${JSON.stringify(token)}`);
  return token;
}

function q(ifname: string): string {
  return `"${safe(ifname)}"`;
}

export function chainNames(sid: string): { out: string; in: string; post: string; hairpin: string } {
  safe(sid);
  return { out: `n-${sid}-out`, in: `n-${sid}-in`, post: `n-${sid}-post`, hairpin: `n-${sid}-hp` };
}

/** Every per-network chain name, for cleanup. */
export function networkChains(sid: string): string[] {
  return Object.values(chainNames(sid));
}

export const NETWORK_CHAIN = /^n-[0-9a-f]{12}-(out|in|post|hp)$/;

/** The skeleton: table, maps and base chains. Re-applying it is harmless; base chains are rewritten, maps kept. */
export function renderBase(): string {
  const t = `inet ${TABLE}`;
  // Published ports: DNAT by map lookup, keyed by (address,) protocol and
  // port. Loopback destinations are never DNATed (that needs route_localnet);
  // the userland proxy serves them, and a raw-table drop refuses packets for
  // a published loopback port that arrive from any other interface.
  const dnat = (chain: string): string[] => [
    `add rule ${t} ${chain} ip daddr != 127.0.0.0/8 fib daddr type local dnat ip to ip daddr . meta l4proto . th dport map @pm4_addr`,
    `add rule ${t} ${chain} ip daddr != 127.0.0.0/8 fib daddr type local dnat ip to meta l4proto . th dport map @pm4_any`,
    `add rule ${t} ${chain} ip6 daddr != ::1 fib daddr type local dnat ip6 to ip6 daddr . meta l4proto . th dport map @pm6_addr`,
    `add rule ${t} ${chain} ip6 daddr != ::1 fib daddr type local dnat ip6 to meta l4proto . th dport map @pm6_any`,
  ];
  return [
    `add table ${t}`,
    `add map ${t} fwd_out { type ifname : verdict; }`,
    `add map ${t} fwd_in { type ifname : verdict; }`,
    `add map ${t} post_in { type ifname : verdict; }`,
    `add map ${t} post_out { type ifname : verdict; }`,
    `add map ${t} pm4_addr { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; }`,
    `add map ${t} pm4_any { type inet_proto . inet_service : ipv4_addr . inet_service; }`,
    `add map ${t} pm6_addr { type ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service; }`,
    `add map ${t} pm6_any { type inet_proto . inet_service : ipv6_addr . inet_service; }`,
    `add set ${t} lo4_ports { type inet_proto . inet_service; }`,
    `add set ${t} lo6_ports { type inet_proto . inet_service; }`,
    `add chain ${t} forward { type filter hook forward priority filter - 1; policy accept; }`,
    `flush chain ${t} forward`,
    `add rule ${t} forward iifname vmap @fwd_out`,
    `add rule ${t} forward oifname vmap @fwd_in`,
    `add chain ${t} postrouting { type nat hook postrouting priority srcnat; policy accept; }`,
    `flush chain ${t} postrouting`,
    `add rule ${t} postrouting iifname vmap @post_in`,
    // Bridged packets (br_netfilter) carry no input interface here, so the
    // hairpin NAT is found by output interface.
    `add rule ${t} postrouting oifname vmap @post_out`,
    `add chain ${t} prerouting { type nat hook prerouting priority dstnat; policy accept; }`,
    `flush chain ${t} prerouting`,
    ...dnat('prerouting'),
    `add chain ${t} output { type nat hook output priority -100; policy accept; }`,
    `flush chain ${t} output`,
    ...dnat('output'),
    `add chain ${t} raw_prerouting { type filter hook prerouting priority raw; policy accept; }`,
    `flush chain ${t} raw_prerouting`,
    `add rule ${t} raw_prerouting iifname != "lo" ip daddr 127.0.0.0/8 meta l4proto . th dport @lo4_ports counter drop`,
    `add rule ${t} raw_prerouting iifname != "lo" ip6 daddr ::1 meta l4proto . th dport @lo6_ports counter drop`,
    '',
  ].join('\n');
}

export interface NftPort {
  proto: 'tcp' | 'udp' | 'sctp';
  hostIp: string;
  hostPort: number;
  containerIp: string;
  containerPort: number;
}

/** The map/set elements of one published port: [container, key, value?]. */
function portElements(p: NftPort): Array<[string, string, string | undefined]> {
  const v6 = p.hostIp.includes(':');
  const fam = v6 ? '6' : '4';
  const proto = safe(p.proto);
  const key = `${proto} . ${p.hostPort}`;
  const value = `${safe(p.containerIp)} . ${p.containerPort}`;
  const wildcard = p.hostIp === '0.0.0.0' || p.hostIp === '::';
  const loopback = p.hostIp.startsWith('127.') || p.hostIp === '::1';
  const out: Array<[string, string, string | undefined]> = [];
  if (wildcard) out.push([`pm${fam}_any`, key, value]);
  else if (!loopback) out.push([`pm${fam}_addr`, `${safe(p.hostIp)} . ${key}`, value]);
  if (wildcard || loopback) out.push([`lo${fam}_ports`, key, undefined]);
  return out;
}

export function renderPortsAdd(ports: readonly NftPort[]): string {
  const t = `inet ${TABLE}`;
  const lines = ports.flatMap((p) => portElements(p).map(([m, k, v]) => `add element ${t} ${m} { ${k}${v ? ` : ${v}` : ''} }`));
  return lines.length ? `${lines.join('\n')}\n` : '';
}

/** Remove port elements; each is added first so a missing one is no error. */
export function renderPortsRemove(ports: readonly NftPort[]): string {
  const t = `inet ${TABLE}`;
  const lines = ports.flatMap((p) =>
    portElements(p).flatMap(([m, k, v]) => [`add element ${t} ${m} { ${k}${v ? ` : ${v}` : ''} }`, `delete element ${t} ${m} { ${k} }`]),
  );
  return lines.length ? `${lines.join('\n')}\n` : '';
}

/** Empty every port map and set (before re-adding the full desired set). */
export function renderPortsFlush(): string {
  const t = `inet ${TABLE}`;
  return ['pm4_addr', 'pm4_any', 'pm6_addr', 'pm6_any'].map((m) => `flush map ${t} ${m}`).concat(['lo4_ports', 'lo6_ports'].map((s) => `flush set ${t} ${s}`)).join('\n') + '\n';
}

export function renderNetwork(n: NftNetwork): string {
  const t = `inet ${TABLE}`;
  const c = chainNames(n.sid);
  const br = q(n.bridge);
  const lines: string[] = [];
  const peers = n.routed ? peerSets(n.sid) : undefined;
  if (n.routed) lines.push(...renderPeerSetDecl(n.sid));
  for (const name of networkChains(n.sid)) lines.push(`add chain ${t} ${name}`, `flush chain ${t} ${name}`);

  // Leaving the bridge (iif = bridge).
  if (n.icc) lines.push(`add rule ${t} ${c.out} oifname ${br} accept`);
  else {
    // ICC off: containers of this network may not talk to each other, except
    // through a published port (hairpin via the host address).
    lines.push(`add rule ${t} ${c.out} oifname ${br} ct status dnat accept`);
    lines.push(`add rule ${t} ${c.out} oifname ${br} ct state established,related accept`);
    lines.push(`add rule ${t} ${c.out} oifname ${br} drop`);
  }
  if (peers && n.icc && n.internal) {
    // Internal means the cluster subnet only: the other hosts' blocks, nothing else.
    lines.push(`add rule ${t} ${c.out} ip daddr @${peers.v4} accept`, `add rule ${t} ${c.out} ip6 daddr @${peers.v6} accept`);
  }
  if (peers && !n.icc && !n.internal) {
    // ICC off holds across hosts too; replies (a published port's) still pass.
    lines.push(`add rule ${t} ${c.out} ip daddr @${peers.v4} ct state new drop`, `add rule ${t} ${c.out} ip6 daddr @${peers.v6} ct state new drop`);
  }
  if (n.internal) lines.push(`add rule ${t} ${c.out} drop`);
  else {
    lines.push(`add rule ${t} ${c.out} ct status dnat accept`);
    lines.push(`add rule ${t} ${c.out} meta oifkind "bridge" drop`);
    lines.push(`add rule ${t} ${c.out} accept`);
  }

  // Entering the bridge from elsewhere (oif = bridge, iif != bridge).
  const fromPeers = peers && n.icc ? [`add rule ${t} ${c.in} ip saddr @${peers.v4} fib saddr . iif oif exists accept`, `add rule ${t} ${c.in} ip6 saddr @${peers.v6} fib saddr . iif oif exists accept`] : [];
  if (n.internal) lines.push(...fromPeers, `add rule ${t} ${c.in} drop`);
  else {
    lines.push(`add rule ${t} ${c.in} ct state established,related accept`);
    lines.push(`add rule ${t} ${c.in} ct status dnat accept`);
    lines.push(...fromPeers);
    lines.push(`add rule ${t} ${c.in} meta iifkind "bridge" drop`);
    if (n.directAccess4) lines.push(`add rule ${t} ${c.in} meta nfproto ipv4 accept`);
    if (n.directAccess6) lines.push(`add rule ${t} ${c.in} meta nfproto ipv6 accept`);
    lines.push(`add rule ${t} ${c.in} drop`);
  }

  // Source NAT for traffic leaving through the uplink.
  if (!n.internal) {
    // Within a routed subnet containers keep their addresses: only what leaves it is masqueraded.
    const within = (fam: 'ip' | 'ip6', s: string): string => (n.routed ? ` ${fam} daddr != ${safe(s)}` : '');
    if (n.masquerade4) for (const s of n.subnets4) lines.push(`add rule ${t} ${c.post} oifname != ${br} ip saddr ${safe(s)}${within('ip', s)} masquerade`);
    if (n.masquerade6) for (const s of n.subnets6) lines.push(`add rule ${t} ${c.post} oifname != ${br} ip6 saddr ${safe(s)}${within('ip6', s)} masquerade`);
  }
  // Hairpin: a container reaching a published port of its own network (or
  // its own) through the host address. Masquerading makes the reply come
  // back through the host, with or without br_netfilter; clients from
  // outside keep their address.
  for (const s of n.subnets4) lines.push(`add rule ${t} ${c.hairpin} ct status dnat ip saddr ${safe(s)} masquerade`);
  for (const s of n.subnets6) lines.push(`add rule ${t} ${c.hairpin} ct status dnat ip6 saddr ${safe(s)} masquerade`);

  lines.push(`add element ${t} fwd_out { ${br} : jump ${c.out} }`);
  lines.push(`add element ${t} fwd_in { ${br} : jump ${c.in} }`);
  lines.push(`add element ${t} post_in { ${br} : jump ${c.post} }`);
  lines.push(`add element ${t} post_out { ${br} : jump ${c.hairpin} }`);
  return `${lines.join('\n')}\n`;
}

/**
 * Remove a network's chains and map entries. Written to succeed whether or
 * not they exist: each object is first added (a no-op when present), then
 * deleted, all in one transaction.
 */
export function renderNetworkRemoval(sid: string, bridge: string): string {
  const t = `inet ${TABLE}`;
  const c = chainNames(sid);
  const br = q(bridge);
  const lines = [`add table ${t}`];
  for (const name of networkChains(sid)) lines.push(`add chain ${t} ${name}`);
  const maps: Array<[string, string]> = [
    ['fwd_out', c.out],
    ['fwd_in', c.in],
    ['post_in', c.post],
    ['post_out', c.hairpin],
  ];
  for (const [m] of maps) lines.push(`add map ${t} ${m} { type ifname : verdict; }`);
  for (const [m, chain] of maps) lines.push(`add element ${t} ${m} { ${br} : jump ${chain} }`);
  for (const [m] of maps) lines.push(`delete element ${t} ${m} { ${br} }`);
  for (const name of networkChains(sid)) lines.push(`flush chain ${t} ${name}`, `delete chain ${t} ${name}`);
  // A routed network's peer sets, once no rule refers to them.
  for (const decl of renderPeerSetDecl(sid)) lines.push(decl, decl.replace(/^add set (\S+ \S+ \S+) .*$/, 'delete set $1'));
  return `${lines.join('\n')}\n`;
}

export async function nftApply(runner: Runner, script: string): Promise<void> {
  await runner.run('nft', ['-f', '-'], { input: script });
}

export interface NftTableView {
  chains: string[];
  sets: string[];
  /** map name -> interface names with an element */
  elements: Record<string, string[]>;
}

/** Read tsnet's table as JSON (reconcile only; never on the request path). */
export async function readTable(runner: Runner): Promise<NftTableView | undefined> {
  let stdout: string;
  try {
    ({ stdout } = await runner.run('nft', ['-j', 'list', 'table', 'inet', TABLE]));
  } catch {
    return undefined;
  }
  const parsed = JSON.parse(stdout) as { nftables: Array<Record<string, { name?: string; elem?: unknown[] }>> };
  const view: NftTableView = { chains: [], sets: [], elements: {} };
  for (const item of parsed.nftables) {
    if (item.chain?.name) view.chains.push(item.chain.name);
    if (item.set?.name) view.sets.push(item.set.name);
    if (item.map?.name) {
      const names: string[] = [];
      for (const e of item.map.elem ?? []) {
        const pair = e as unknown[];
        if (Array.isArray(pair) && typeof pair[0] === 'string') names.push(pair[0]);
      }
      view.elements[item.map.name] = names;
    }
  }
  return view;
}
