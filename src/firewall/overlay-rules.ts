// nftables rules that only exist while overlays do.
// - VXLAN is unauthenticated (reliability.md §2 #9): anyone who can send UDP
//   to the VXLAN port can inject frames into an overlay. An input-hook drop
//   admits the port only from member VTEPs (an nft set kept in step with
//   membership) before the kernel decapsulates anything.
// - The same sets exempt VXLAN between member VTEPs from conntrack (raw
//   notrack, both ways). Each host only ever sends to the port, so a VXLAN
//   flow never has a reply direction for conntrack to track; tracking it cost
//   about a tenth of the overlay's CPU per byte (bench/dataplane.ts).
// - The distributed gateway (every host answers at the same gateway address
//   with the same MAC) is kept local by bridge port isolation in the
//   overlay's namespace (kernel/overlay-ns.ts), not by rules. Older tsnet
//   did it with `table bridge tsnet` in the host namespace, which reconcile
//   removes.
// - ICC off: a table of the bridge family in the overlay's own namespace
//   drops IP between its ports except to and from the gateway's port, where
//   the host's rules (published ports) apply.
import { TsnetError } from '../errors.js';
import type { Runner } from '../kernel/exec.js';
import { isValidIfName } from '../kernel/names.js';
import { ipFamily, parseIp } from '../net/cidr.js';
import { nftApply, TABLE } from './nft.js';

function ifq(name: string): string {
  if (!isValidIfName(name)) throw new TsnetError('TSNET_ERR_INTERNAL', `unsafe interface name ${JSON.stringify(name)}`);
  return `"${name}"`;
}

function vtepAddr(addr: string): string {
  if (!parseIp(addr)) throw new TsnetError('TSNET_ERR_INTERNAL', `not an IP address: ${JSON.stringify(addr)}`);
  return addr;
}

/**
 * The VXLAN port guard with exactly these peers allowed, per family: a host
 * whose VTEP is IPv4 still drops IPv6 datagrams to the port, and the other
 * way round.
 */
export function renderVxlanGuard(port: number, peers: readonly string[]): string {
  const t = `inet ${TABLE}`;
  const lines = [
    `add table ${t}`,
    `add set ${t} vtep4 { type ipv4_addr; }`,
    `flush set ${t} vtep4`,
    `add set ${t} vtep6 { type ipv6_addr; }`,
    `flush set ${t} vtep6`,
    `add chain ${t} vxlan_in { type filter hook input priority filter - 1; policy accept; }`,
    `flush chain ${t} vxlan_in`,
    `add rule ${t} vxlan_in udp dport ${Number(port)} ip saddr != @vtep4 counter drop`,
    `add rule ${t} vxlan_in udp dport ${Number(port)} ip6 saddr != @vtep6 counter drop`,
    `add chain ${t} vxlan_raw_in { type filter hook prerouting priority raw; policy accept; }`,
    `flush chain ${t} vxlan_raw_in`,
    `add rule ${t} vxlan_raw_in udp dport ${Number(port)} ip saddr @vtep4 notrack`,
    `add rule ${t} vxlan_raw_in udp dport ${Number(port)} ip6 saddr @vtep6 notrack`,
    `add chain ${t} vxlan_raw_out { type filter hook output priority raw; policy accept; }`,
    `flush chain ${t} vxlan_raw_out`,
    `add rule ${t} vxlan_raw_out udp dport ${Number(port)} ip daddr @vtep4 notrack`,
    `add rule ${t} vxlan_raw_out udp dport ${Number(port)} ip6 daddr @vtep6 notrack`,
  ];
  const uniq = [...new Set(peers)].map(vtepAddr);
  for (const [set, members] of [['vtep4', uniq.filter((p) => ipFamily(p) === 4)], ['vtep6', uniq.filter((p) => ipFamily(p) === 6)]] as const) {
    if (members.length > 0) lines.push(`add element ${t} ${set} { ${members.join(', ')} }`);
  }
  return `${lines.join('\n')}\n`;
}

export function renderVxlanGuardRemoval(): string {
  const t = `inet ${TABLE}`;
  return [
    `add table ${t}`,
    `add chain ${t} vxlan_in`,
    `delete chain ${t} vxlan_in`,
    `add chain ${t} vxlan_raw_in`,
    `delete chain ${t} vxlan_raw_in`,
    `add chain ${t} vxlan_raw_out`,
    `delete chain ${t} vxlan_raw_out`,
    `add set ${t} vtep4 { type ipv4_addr; }`,
    `delete set ${t} vtep4`,
    `add set ${t} vtep6 { type ipv6_addr; }`,
    `delete set ${t} vtep6`,
    '',
  ].join('\n');
}

/** The host-namespace gateway guard of tsnet before the overlay had a namespace of its own: gone wherever it is found. */
export function renderLegacyGatewayGuardRemoval(): string {
  return `add table bridge ${TABLE}\ndelete table bridge ${TABLE}\n`;
}

/**
 * ICC off, in the overlay's namespace: IP between two ports of its bridge
 * (two containers, or a container and the VXLAN port) is dropped; traffic to
 * and from the gateway's port passes, and the host's rules decide it there.
 * ARP still passes, as with Docker's ICC, which filters IP.
 */
export function renderIccRules(gatewayPort: string): string {
  const t = `bridge ${TABLE}`;
  const gw = ifq(gatewayPort);
  return [
    `add table ${t}`,
    `add chain ${t} forward { type filter hook forward priority 0; policy accept; }`,
    `flush chain ${t} forward`,
    `add rule ${t} forward iifname ${gw} accept`,
    `add rule ${t} forward oifname ${gw} accept`,
    `add rule ${t} forward ether type { ip, ip6 } counter drop`,
    '',
  ].join('\n');
}

export function renderIccRemoval(): string {
  return `add table bridge ${TABLE}\ndelete table bridge ${TABLE}\n`;
}

export async function applyOverlayRules(runner: Runner, script: string): Promise<void> {
  await nftApply(runner, script);
}
